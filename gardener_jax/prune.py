"""One-shot physical block removal (SPEC §3): a gather along the depth axis, and what it saves.

A removed block's residual branch becomes the identity; every other weight stays as it was, the
position embedding is still added and the kept blocks keep their order. Block ids are the
original model's, 1-based, as in `ModelConfig.kept_blocks`.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np

from gardener_jax.checkpoint import count_params
from gardener_jax.models import ModelConfig


def num_to_remove(ratio: float, depth: int) -> int:
  """k = round(ratio · depth), rounding halves up; 1 ≤ k ≤ depth − 1."""
  if not 0 < ratio < 1:
    raise ValueError(f"pruning ratio must lie strictly between 0 and 1, got {ratio}")
  k = math.floor(ratio * depth + 0.5)
  if not 1 <= k <= depth - 1:
    raise ValueError(f"ratio {ratio} of {depth} blocks removes {k}; choose one that removes 1 to {depth - 1}")
  return k


def check_removal(remove: Sequence[int], config: ModelConfig) -> list[int]:
  remove = [int(b) for b in remove]
  unknown = [b for b in remove if b not in config.kept_blocks]
  if unknown:
    raise ValueError(f"blocks {unknown} are not in this model; it holds blocks {list(config.kept_blocks)} (1-based)")
  if len(set(remove)) != len(remove):
    raise ValueError(f"blocks to remove are listed twice: {remove}")
  if not 1 <= len(remove) <= config.depth - 1:
    raise ValueError(f"remove between 1 and {config.depth - 1} of the {config.depth} blocks, got {len(remove)}")
  return remove


def prune(params, config: ModelConfig, remove: Sequence[int]):
  """Returns (params, config) without the blocks `remove` (original 1-based ids)."""
  remove = check_removal(remove, config)
  keep = [i for i, block in enumerate(config.kept_blocks) if block not in remove]
  blocks = jax.tree.map(lambda leaf: leaf[np.asarray(keep)], params["blocks"])
  kept_blocks = tuple(config.kept_blocks[i] for i in keep)
  return {**params, "blocks": blocks}, config.replace(depth=len(keep), kept_blocks=kept_blocks)


def gflops(config: ModelConfig) -> float:
  """Multiply-accumulates per clip, in billions (the usual ViT 'FLOPs'; ViT-B 16×224²: ≈180)."""
  tokens, width = config.num_tokens, config.width
  patch = tokens * config.tubelet_size * config.patch_size**2 * config.in_channels * width
  block = tokens * (4 * width * width + 2 * width * config.mlp_dim) + 2 * tokens * tokens * width
  return (patch + config.depth * block + width * config.num_classes) / 1e9


def cost(params, config: ModelConfig) -> dict:
  return {"depth": config.depth, "params": count_params(params), "gflops": gflops(config)}
