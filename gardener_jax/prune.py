"""One-shot physical block removal (SPEC §3): a gather along the depth axis, and what it saves.

A removed block's residual branch becomes the identity; every other weight stays as it was, the
position embedding is still added and the kept blocks keep their order. Block ids are the
original model's, 1-based, as in `ModelConfig.kept_blocks`.
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import jax
import numpy as np

from gardener_jax import criteria, report
from gardener_jax.calibration import Calibration
from gardener_jax.checkpoint import count_params, load_tree, read_config, write_checkpoint
from gardener_jax.files import atomic_directory
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


def prune_checkpoint(checkpoint, out, *, criterion: str | None = None, ratio: float | None = None,
                     remove: int | None = None, blocks: Sequence[int] | None = None, discretize: str = "exact",
                     seed: int = 0, oracle: str | None = None, calibration: Calibration | None = None,
                     overwrite: bool = False):
  """Prunes a checkpoint directory by criterion and ratio or k, or by an explicit block list, and writes
  the smaller checkpoint with prune_report.{json,md} and scores.png. Returns (report, ranking).
  `calibration`: the clips of a criterion that needs data."""
  config, tree = read_config(checkpoint), load_tree(checkpoint)
  params, ranking = tree["params"], None
  if blocks:
    if criterion or ratio is not None or remove is not None:
      raise ValueError("--blocks names the blocks itself; drop --criterion, --ratio and --remove")
    chosen, chosen_by = list(blocks), f"explicit list {','.join(map(str, blocks))}"
  else:
    if (ratio is None) == (remove is None):
      raise ValueError("give exactly one of --ratio R or --remove K (or --blocks)")
    k = num_to_remove(ratio, config.depth) if ratio is not None else remove
    if not 1 <= k <= config.depth - 1:
      raise ValueError(f"--remove {k}: remove between 1 and {config.depth - 1} of the {config.depth} blocks")
    ranking = criteria.rank(params, config, criterion or "entropy", discretize, seed, oracle, calibration)
    chosen = ranking.blocks_to_remove(k)
    chosen_by = f"criterion {report.criterion_label(ranking)}, k = {k}" + (f" (ratio {ratio})" if ratio else "")
  pruned, pruned_config = prune(params, config, chosen)
  result = {"source": str(checkpoint), "chosen_by": chosen_by, "removed_blocks": sorted(chosen),
            "removal_order": chosen, "kept_blocks": list(pruned_config.kept_blocks),
            "original_depth": pruned_config.original_depth,
            "before": cost(params, config), "after": cost(pruned, pruned_config),
            "ranking": ranking.to_dict() if ranking else None}
  with atomic_directory(out, overwrite) as tmp:
    write_checkpoint(tmp, pruned, pruned_config)
    (tmp / "prune_report.json").write_text(json.dumps(result, indent=2) + "\n")
    (tmp / "prune_report.md").write_text(report.prune_markdown(result, ranking))
    if ranking is not None:
      report.plot_scores(ranking, tmp / "scores.png", removed=set(chosen))
  return result, ranking
