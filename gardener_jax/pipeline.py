"""The job behind `gardener_jax.main`: convert → score → prune → finetune → report.

Stages land as the project grows; today's job converts the initial checkpoint, proves Flax/PyTorch
parity on it and exports it back to PyTorch bit-exactly.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import jax
import numpy as np
from absl import logging

from gardener_jax.checkpoint import CONFIG_FILE, load_checkpoint, load_tree


def _random_hf_model(model_config, seed: int, directory: pathlib.Path):
  """A seeded random-init transformers VideoMAE saved with save_pretrained (nothing is downloaded)."""
  import torch
  import transformers

  torch.manual_seed(seed)
  m = model_config
  hf_config = transformers.VideoMAEConfig(
      hidden_size=m.width, num_hidden_layers=m.depth, num_attention_heads=m.num_heads, intermediate_size=m.mlp_dim,
      num_frames=m.num_frames, image_size=m.image_size, patch_size=m.patch_size, tubelet_size=m.tubelet_size,
      num_labels=m.num_classes)
  model = transformers.VideoMAEForVideoClassification(hf_config).eval()
  model.save_pretrained(directory)
  return model


def _torch_logits(source: pathlib.Path, clips: np.ndarray) -> np.ndarray:
  import torch
  import transformers

  model = transformers.VideoMAEForVideoClassification.from_pretrained(source).eval()
  with torch.no_grad():
    return model(torch.from_numpy(clips).permute(0, 1, 4, 2, 3)).logits.numpy()


def convert_stage(config, workdir: pathlib.Path) -> dict:
  """Brings the initial weights in as a gardener_jax checkpoint; returns what it measured."""
  from tools.convert_torch import HF, convert, export

  checkpoint = workdir / "checkpoint"
  source = config.init.source
  hf_reference = None
  if source == "random_hf":
    hf_reference = workdir / "torch_hf"
    if not hf_reference.exists():
      _random_hf_model(config.model, config.seed, hf_reference)
    source = hf_reference
  elif (pathlib.Path(source) / "config.json").is_file() and (pathlib.Path(source) / "model.safetensors").is_file():
    hf_reference = pathlib.Path(source)
  if (pathlib.Path(source) / CONFIG_FILE).is_file() and (pathlib.Path(source) / "params").is_dir():
    return {"checkpoint": str(source)}  # already a gardener_jax checkpoint

  if not checkpoint.exists():
    start = time.perf_counter()
    overrides = dict(num_heads=config.init.num_heads, num_frames=config.init.num_frames,
                     image_size=config.init.image_size)
    report = convert(source, checkpoint, variant=config.init.variant or None, overrides=overrides)
    logging.info("converted %s (%s layout, %s params) in %.2f s", source, report["layout"],
                 f"{report['num_params']:,}", time.perf_counter() - start)
  result = {"checkpoint": str(checkpoint)}
  if hf_reference is None:
    return result

  model, params, model_config = load_checkpoint(checkpoint)
  rng = np.random.default_rng(config.seed)
  clips = rng.standard_normal((config.parity.batch, model_config.num_frames, model_config.image_size,
                               model_config.image_size, model_config.in_channels), np.float32)
  flax_logits = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, clips))
  difference = float(np.abs(flax_logits - _torch_logits(hf_reference, clips)).max())

  exported = workdir / "exported_hf"
  if not exported.exists():
    export(checkpoint, exported, HF)
  from safetensors.numpy import load_file

  original, back = load_file(hf_reference / "model.safetensors"), load_file(exported / "model.safetensors")
  identical = sorted(original) == sorted(back) and all(original[k].tobytes() == back[k].tobytes() for k in original)
  result.update(parity_max_abs_logit_difference=difference, parity_ok=difference <= config.parity.atol,
                round_trip_bit_identical=identical, num_tensors=len(original))
  logging.info("Flax vs PyTorch: max |Δlogit| = %.2e (tolerance %.0e); PyTorch → Flax → PyTorch over %d tensors: %s",
               difference, config.parity.atol, len(original), "bit-identical" if identical else "DIFFERENT")
  if not (result["parity_ok"] and identical):
    raise RuntimeError(f"conversion check failed: {result}")
  return result


def run(config, workdir: str | os.PathLike) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  report = {"convert": convert_stage(config, workdir)}
  (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
  print(json.dumps(report, indent=2))
  return report
