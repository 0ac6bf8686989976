"""A randomly initialised HuggingFace VideoMAE classifier: a stand-in PyTorch source for jobs and
benchmarks that must run without downloading weights (`init.source = 'random_hf'`)."""

from __future__ import annotations

import pathlib


def save_random_hf_classifier(directory: pathlib.Path, *, width: int, depth: int, num_heads: int, mlp_dim: int,
                              num_frames: int, image_size: int, patch_size: int, tubelet_size: int, num_classes: int,
                              seed: int) -> None:
  import torch
  import transformers

  torch.manual_seed(seed)
  transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(
      hidden_size=width, num_hidden_layers=depth, num_attention_heads=num_heads, intermediate_size=mlp_dim,
      num_frames=num_frames, image_size=image_size, patch_size=patch_size, tubelet_size=tubelet_size,
      num_labels=num_classes)).save_pretrained(directory)
