"""A randomly initialised HuggingFace VideoMAE classifier: a stand-in PyTorch source for jobs and
benchmarks that must run without downloading weights (`init.source = 'random_hf'`)."""

from __future__ import annotations

import pathlib

from gardener_jax.files import atomic_directory
from gardener_jax.models import ModelConfig


def save_random_hf_classifier(directory: pathlib.Path, config: ModelConfig, seed: int) -> None:
  import torch
  import transformers

  torch.manual_seed(seed)
  model = transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(
      hidden_size=config.width, num_hidden_layers=config.depth, num_attention_heads=config.num_heads,
      intermediate_size=config.mlp_dim, num_frames=config.num_frames, image_size=config.image_size,
      patch_size=config.patch_size, tubelet_size=config.tubelet_size,
      num_labels=config.num_classes))
  with atomic_directory(directory) as tmp:  # whole or not at all: a relaunch takes what it finds
    model.save_pretrained(tmp)
