"""Exact block entropy of ViT-B-sized blocks (7,077,888 weights each, 12 blocks unless told) on float16-grid
and float32 values: this project against references doing the same work on the same device (SPEC §9), in
one run.

  python benchmarks/entropy.py [--repeats 3] [--blocks 12]

Every implementation takes, per block, the four scored matrices (qkv, proj, fc1, fc2) and counts their
distinct values. On a CPU backend the references are the authors' pandas `value_counts` and numpy
`np.unique(return_counts=True)`, on the same CPU. On a GPU backend the reference is `torch.unique` with the
weights already on the same GPU (pandas and numpy do not run there: on another device no ratio is taken,
and at 2-25 s a call they would take minutes of a lent GPU).
The first call (trace + compile for JAX) has its own column; the median is of the calls after it.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import first_and_median, jax_device_name, machine, print_table, torch_device_name  # noqa: E402
from gardener_jax.entropy import BLOCK_MATRICES, block_entropy  # noqa: E402
from gardener_jax.models import ModelConfig, init_params  # noqa: E402

HOST = "CPU (host)"


@dataclasses.dataclass(frozen=True)
class Reference:
  name: str
  device: str
  entropy: Callable[[], np.ndarray]  # (depth,) nats, on the host


def vit_b_blocks(grid: str, depth: int, seed: int = 0) -> dict:
  """`depth` ViT-B block params with trained-like magnitudes (N(0, 0.02)); float16-grid or full float32 values."""
  config = ModelConfig.from_variant("vit_b", depth=depth)
  shapes = jax.eval_shape(lambda: init_params(config))["blocks"]
  rng = np.random.default_rng(seed)

  def fill(shape):
    values = rng.standard_normal(shape.shape, np.float32) * np.float32(0.02)
    return values.astype(np.float16).astype(np.float32) if grid == "float16" else values

  return {"blocks": jax.tree.map(fill, shapes)}


def scored_matrices(params) -> list[np.ndarray]:
  """The four scored matrices, each stacked over depth, in SPEC order."""
  blocks = params["blocks"]
  return [blocks[group][name][leaf] for group, name, leaf in BLOCK_MATRICES]


def weights_per_block() -> int:
  shapes = jax.eval_shape(lambda: init_params(ModelConfig.from_variant("vit_b", depth=1)))
  return sum(int(np.prod(m.shape[1:])) for m in scored_matrices(shapes))


def per_block(matrices, concatenate, entropy_of_weights) -> list:
  """The authors' layout: per block, the four matrices flattened and concatenated, then one entropy."""
  return [entropy_of_weights(concatenate([m[i].ravel() for m in matrices])) for i in range(matrices[0].shape[0])]


def entropy_of_probabilities(p: np.ndarray) -> float:
  return -(p * np.log(p)).sum()


def pandas_entropy(weights: np.ndarray) -> float:
  return entropy_of_probabilities(pd.Series(weights).value_counts(normalize=True).to_numpy())


def numpy_entropy(weights: np.ndarray) -> float:
  counts = np.unique(weights, return_counts=True)[1]
  return entropy_of_probabilities(counts / counts.sum())


def torch_entropy(weights: torch.Tensor) -> torch.Tensor:
  counts = torch.unique(weights, return_counts=True)[1].double()
  p = counts / counts.sum()
  return -(p * p.log()).sum()


def host_references(matrices: list[np.ndarray]) -> list[Reference]:
  return [Reference("pandas value_counts (authors')", HOST,
                    lambda: np.asarray(per_block(matrices, np.concatenate, pandas_entropy))),
          Reference("numpy unique(return_counts)", HOST,
                    lambda: np.asarray(per_block(matrices, np.concatenate, numpy_entropy)))]


def torch_gpu_reference(matrices: list[np.ndarray]) -> Reference:
  """torch.unique with the weights already on the GPU; the entropies end on the host, as gardener_jax's do."""
  on_gpu = [torch.from_numpy(m).cuda() for m in matrices]

  def entropy():  # .cpu() waits for the GPU
    return torch.stack(per_block(on_gpu, torch.cat, torch_entropy)).cpu().numpy()

  return Reference("torch unique(return_counts)", torch_device_name("cuda"), entropy)


def references(params, jax_on_gpu: bool) -> list[Reference]:
  """The references on gardener_jax's device."""
  matrices = scored_matrices(params)
  if jax_on_gpu:
    return [torch_gpu_reference(matrices)] if torch.cuda.is_available() else []
  return host_references(matrices)


def grid_rows(grid: str, depth: int, repeats: int, jax_on_gpu: bool) -> list[list]:
  """One row for gardener_jax, then one per reference, with its ratio and max |ΔH| to gardener_jax."""
  params = vit_b_blocks(grid, depth)
  device_params = jax.device_put(params)
  first_call, seconds, ours = first_and_median(lambda: block_entropy(device_params), repeats)
  values = "float16 grid" if grid == "float16" else "float32"
  rows = [[values, f"gardener_jax block_entropy ({ours.engine})", jax_device_name(), f"{int(ours.distinct.mean()):,}",
           f"{ours.entropy.mean():.5f}", first_call, seconds, "", ""]]
  for reference in references(params, jax_on_gpu):
    ref_first_call, ref_seconds, entropy = first_and_median(reference.entropy, repeats)
    rows.append([values, reference.name, reference.device, "", f"{entropy.mean():.5f}", ref_first_call, ref_seconds,
                 ref_seconds / seconds, f"{np.abs(entropy - ours.entropy).max():.1e}"])
  for row in rows:  # kept if the script is stopped before its table
    print(f"{row[0]}, {row[1]}: median {row[6]:.4f} s", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first; their median is shown")
  parser.add_argument("--blocks", type=int, default=12, help="ViT-B blocks to score (fewer for a quick check)")
  args = parser.parse_args()
  jax_on_gpu = jax.default_backend() == "gpu"
  rows = [row for grid in ("float16", "float32") for row in grid_rows(grid, args.blocks, args.repeats, jax_on_gpu)]
  print_table(f"Exact entropy of {args.blocks} ViT-B blocks ({args.blocks} × {weights_per_block():,} weights), "
              f"entropies end on the host on every side; first call on its own column, median of {args.repeats} "
              f"calls after it; speed-up = reference s / gardener_jax s; {machine()}",
              ["values", "implementation", "device", "distinct / block", "mean H", "first call s", "median s",
               "gardener_jax speed-up", "max |ΔH| to gardener_jax"], rows)


if __name__ == "__main__":
  main()
