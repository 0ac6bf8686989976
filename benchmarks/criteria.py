"""Scoring time of every criterion family for ViT-B (12 blocks, random init, 16 × 224²), in one run, each
against a reference on the same CPU and precision (float32):

- data-free spectral criteria (α, spectral entropy): numpy's SVD of each matrix and the same power-law
  fit vectorised in numpy, as a WeightWatcher-style script would do it;
- calibration criteria (Block Influence, angular distance) on 8 clips: transformers VideoMAE (SDPA) with
  output_hidden_states, the 8 clips in one batch, and the token cosines in PyTorch;
- the weight statistics and entropy, for scale (no reference row: see benchmarks/entropy.py).

  python benchmarks/criteria.py [--clips 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks.common import machine, median_time, print_table  # noqa: E402
from gardener_jax import criteria, load_checkpoint  # noqa: E402
from gardener_jax.criteria import ScoringInput  # noqa: E402
from gardener_jax.calibration import Calibration  # noqa: E402
from gardener_jax.entropy import BLOCK_MATRICES  # noqa: E402
from tools.convert_torch import convert  # noqa: E402


def numpy_spectra(params) -> tuple[np.ndarray, np.ndarray]:
  """(α, spectral entropy) per block, mean of the four matrices: the estimator of gardener_jax.spectral."""
  alphas, entropies = [], []
  for group, name, leaf in BLOCK_MATRICES:
    for w in np.asarray(params["blocks"][group][name][leaf], np.float32):
      sv = np.linalg.svd(w, compute_uv=False)
      usable = sv > sv[0] * max(w.shape) * np.finfo(np.float32).eps
      eigenvalues = np.sort(sv[usable].astype(np.float64) ** 2)
      log_ratio = np.log(eigenvalues)[None, :] - np.log(eigenvalues)[:, None]
      in_tail = np.triu(np.ones_like(log_ratio, dtype=bool))
      n = in_tail.sum(axis=1)
      alpha = 1 + n / np.where(in_tail, log_ratio, 0).sum(axis=1).clip(1e-300)
      empirical = (np.arange(len(n))[None, :] - np.arange(len(n))[:, None]) / n[:, None]
      with np.errstate(over="ignore"):  # below the diagonal (not in the tail): masked out
        fitted = 1 - np.exp((1 - alpha[:, None]) * log_ratio)
      distance = np.where(in_tail, np.abs(fitted - empirical), 0).max(axis=1)
      alphas.append(alpha[np.argmin(distance[:-1])])
      p = sv**2 / np.sum(sv**2)
      entropies.append(-np.sum(p[p > 0] * np.log(p[p > 0])) / np.log(usable.sum()))
  depth = len(alphas) // 4
  return (np.asarray(alphas).reshape(4, depth).mean(axis=0), np.asarray(entropies).reshape(4, depth).mean(axis=0))


def torch_similarity(model, clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
  """(Block Influence per block, angular distance of every single-block span) from output_hidden_states."""
  with torch.no_grad():
    hidden = model.videomae(clips, output_hidden_states=True).hidden_states
    unit = torch.nn.functional.normalize(torch.stack(hidden), dim=-1)  # (L + 1, B, N, D)
    cosine = torch.einsum("ibnd,jbnd->bnij", unit, unit).clamp(-1, 1)
    angle = torch.arccos(cosine).mean(dim=(0, 1)) / torch.pi
    cos = cosine.mean(dim=(0, 1))
  return (1 - torch.diagonal(cos, offset=1)).numpy(), torch.diagonal(angle, offset=1).numpy()


def timed(fn, repeats: int) -> tuple[float, float, object]:
  """(first call s, median of `repeats` later calls s, the first call's result)."""
  start = time.perf_counter()
  result = fn()
  first = time.perf_counter() - start
  return first, median_time(fn, repeats), result


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--clips", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  torch.manual_seed(0)
  hf_config = transformers.VideoMAEConfig(num_labels=400, attn_implementation="sdpa")
  torch_model = transformers.VideoMAEForVideoClassification(hf_config).eval()
  with tempfile.TemporaryDirectory() as tmp:
    torch_model.save_pretrained(f"{tmp}/hf")
    convert(f"{tmp}/hf", f"{tmp}/flax")
    _, params, config = load_checkpoint(f"{tmp}/flax")

  rows = []
  # Each family is one computation: the SVDs give both spectral scores, one forward both calibration scores.
  _, reference, (alpha_ref, entropy_ref) = timed(lambda: numpy_spectra(params), args.repeats)
  first, ours, spectra = timed(lambda: ScoringInput(params, config).spectra, args.repeats)
  rows.append(["alpha, spectral_entropy", "none", ours, first - ours, "numpy SVD + the same fit", reference,
               ours / reference, f"{np.abs(spectra.alpha.mean(axis=1) - alpha_ref).max():.1e}, "
               f"{np.abs(spectra.spectral_entropy.mean(axis=1) - entropy_ref).max():.1e}"])

  clips = np.random.default_rng(0).standard_normal((args.clips, 16, 224, 224, 3), np.float32)
  torch_clips = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).contiguous()
  calibration = Calibration(clips, f"{args.clips} random clips")
  _, reference, (influence_ref, angle_ref) = timed(lambda: torch_similarity(torch_model, torch_clips), args.repeats)
  first, ours, similarity = timed(lambda: ScoringInput(params, config, calibration=calibration).similarity,
                                  args.repeats)
  rows.append(["block_influence, angular_distance", f"{args.clips} clips", ours, first - ours,
               "transformers SDPA hidden states + cosines", reference, ours / reference,
               f"{np.abs(similarity.block_influence() - influence_ref).max():.1e}, "
               f"{np.abs(similarity.span_distances(1) - angle_ref).max():.1e}"])

  for name, discretize in (("entropy", "hist:4096"), ("mutual_information", "hist:4096"), ("l2", ""),
                           ("kurtosis", "")):
    first, ours, _ = timed(lambda: criteria.rank(params, config, name, discretize or "exact"), args.repeats)
    rows.append([f"{name} ({discretize})" if discretize else name, "none", ours, first - ours, "—", "", "", ""])
  print_table(f"Scoring 12 ViT-B blocks (16 × 224², float32), median of {args.repeats} after a first call; "
              f"{machine()}; torch threads {torch.get_num_threads()}",
              ["criteria", "data", "gardener_jax s", "first-call extra s", "reference", "reference s",
               "ratio to reference", "max |Δscore| (each)"], rows)


if __name__ == "__main__":
  main()
