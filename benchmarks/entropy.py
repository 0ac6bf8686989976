"""Exact block entropy of ViT-B-sized weights (12 blocks × 7,077,888): this project against the
authors' approach (a pandas value count per block), in one run, on float16-grid and float32 values.

  python benchmarks/entropy.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import median_time, print_table  # noqa: E402
from gardener_jax.entropy import BLOCK_MATRICES, block_entropy  # noqa: E402
from gardener_jax.models import ModelConfig, init_params  # noqa: E402


def vit_b_blocks(grid: str, seed: int = 0) -> dict:
  """ViT-B block params with trained-like magnitudes (N(0, 0.02)); float16-grid or full float32 values."""
  config = ModelConfig.from_variant("vit_b")
  shapes = jax.eval_shape(lambda: init_params(config))["blocks"]
  rng = np.random.default_rng(seed)

  def fill(shape):
    values = rng.standard_normal(shape.shape, np.float32) * np.float32(0.02)
    return values.astype(np.float16).astype(np.float32) if grid == "float16" else values

  return {"blocks": jax.tree.map(fill, shapes)}


def pandas_entropy(params) -> np.ndarray:
  """The authors' approach: per block, the four matrices flattened and concatenated, then value_counts."""
  blocks = params["blocks"]
  entropies = []
  for i in range(blocks["attn"]["qkv"]["kernel"].shape[0]):
    weights = np.concatenate([np.asarray(blocks[g][n][leaf][i]).ravel() for g, n, leaf in BLOCK_MATRICES])
    p = pd.Series(weights).value_counts(normalize=True).to_numpy()
    entropies.append(-(p * np.log(p)).sum())
  return np.asarray(entropies)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  rows = []
  for grid in ("float16", "float32"):
    params = vit_b_blocks(grid)
    device_params = jax.device_put(params)
    start = time.perf_counter()
    first = block_entropy(device_params)  # traces and compiles
    first_call = time.perf_counter() - start
    ours = median_time(lambda: block_entropy(device_params), args.repeats)
    reference_seconds = median_time(lambda: pandas_entropy(params), 1 if grid == "float32" else args.repeats)
    difference = np.abs(first.entropy - pandas_entropy(params)).max() if grid == "float16" else np.abs(
        first.entropy - pandas_entropy(params)).max()
    rows.append([f"{grid} grid" if grid == "float16" else grid, first.engine, f"{int(first.distinct.mean()):,}",
                 f"{first.entropy.mean():.5f}", reference_seconds, ours, first_call - ours,
                 reference_seconds / ours, f"{difference:.1e}"])
  print_table(f"Exact entropy of 12 ViT-B blocks (12 × 7,077,888 weights), {jax.devices()[0].device_kind}",
              ["values", "engine", "distinct / block", "mean H", "pandas s", "gardener_jax s", "compile s",
               "speed-up", "max |ΔH|"], rows)


if __name__ == "__main__":
  main()
