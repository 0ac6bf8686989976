"""How far a sweep's numbers can be trusted: cell intervals over training seeds and eval videos, paired
tests against random, and bootstrap intervals on rank correlations.

WAR is a share of the eval videos, in %. A cell's value varies with the training seed (sampled here)
and with the eval set (fixed here, one draw of the videos the task could have held). Its 95 % interval
therefore adds both variances: mean ± q · sqrt(s² / n + p̄ (1 − p̄) / N), for n runs with standard
deviation s, mean share p̄ and N eval videos. The seeds' part is estimated (n − 1 degrees of freedom),
the binomial part known, so q is the t quantile at the Welch–Satterthwaite degrees of freedom of the
sum: near n − 1 when the seeds dominate, near the normal quantile when the eval set does (and for a
single run, which leaves the binomial interval of that run).
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


def _quantile(degrees_of_freedom: float) -> float:
  """The two-sided 95 % quantile of Student's t (the normal one for infinite degrees of freedom)."""
  if math.isinf(degrees_of_freedom):
    return float(stats.norm.ppf(0.5 + LEVEL / 2))
  return float(stats.t.ppf(0.5 + LEVEL / 2, degrees_of_freedom))


def _summary(values: np.ndarray, run_variance: float, run_df: float, videos: int | None) -> dict:
  """mean, std and n of `values` (WAR %) with the interval mean ± q · sqrt(run_variance + binomial):
  `run_variance` is the variance of the mean over the runs (as a share²), estimated with `run_df`
  degrees of freedom; the binomial part is known; q at the Welch–Satterthwaite degrees of freedom."""
  n, mean = len(values), float(values.mean())
  std = float(values.std(ddof=1)) if n > 1 else 0.0
  share = mean / 100
  eval_variance = share * (1 - share) / videos if videos else 0.0
  if run_variance > 0:
    degrees_of_freedom = (run_variance + eval_variance) ** 2 / (run_variance ** 2 / run_df)
  else:
    degrees_of_freedom = math.inf if n == 1 or eval_variance else run_df
  half = 100 * _quantile(degrees_of_freedom) * math.sqrt(run_variance + eval_variance)
  return {"mean": mean, "std": std, "n": n, "low": max(0.0, mean - half), "high": min(100.0, mean + half)}


def cell(values: Sequence[float], videos: int | None) -> dict | None:
  """mean, std (ddof 1; 0 for one run), n and the 95 % interval [low, high] of independent runs' WARs (%)
  on `videos` eval videos; None for no runs."""
  values = np.asarray(values, np.float64)
  if not len(values):
    return None
  n = len(values)
  run_variance = float(values.std(ddof=1) / 100) ** 2 / n if n > 1 else 0.0
  return _summary(values, run_variance, n - 1, videos)


def crossed_cell(wars: np.ndarray, videos: int | None) -> dict:
  """`cell` of random's runs, every draw (columns) trained with every seed (rows): the draws are shared by
  the seeds and the seeds by the draws, so the runs are not independent. The variance of the mean is
  (MS_seed + MS_draw − MS_rest) / (S · D), the two-way random-effects model without replication (a negative
  estimate of the seed or the draw component is taken as 0), at Satterthwaite's degrees of freedom."""
  wars = np.asarray(wars, np.float64)
  seeds, draws = wars.shape
  if seeds < 2 or draws < 2:
    return cell(wars.ravel(), videos)
  x = wars / 100
  grand, by_seed, by_draw = x.mean(), x.mean(axis=1), x.mean(axis=0)
  ms_seed = draws * float(np.sum((by_seed - grand) ** 2)) / (seeds - 1)
  ms_draw = seeds * float(np.sum((by_draw - grand) ** 2)) / (draws - 1)
  rest_df = (seeds - 1) * (draws - 1)
  ms_rest = float(np.sum((x - by_seed[:, None] - by_draw[None, :] + grand) ** 2)) / rest_df
  # (MS_seed − MS_rest) + (MS_draw − MS_rest) + MS_rest, each component's term dropped where it is negative
  use_seed, use_draw = ms_seed > ms_rest, ms_draw > ms_rest
  terms = [(ms_seed, seeds - 1, int(use_seed)), (ms_draw, draws - 1, int(use_draw)),
           (ms_rest, rest_df, 1 - int(use_seed) - int(use_draw))]
  combined = sum(weight * ms for ms, _, weight in terms)
  spread = sum((weight * ms) ** 2 / df for ms, df, weight in terms)
  df = combined ** 2 / spread if spread > 0 else rest_df
  return _summary(wars.ravel(), combined / (seeds * draws), df, videos)


def format_cell(summary: dict | None, interval: bool = True) -> str:
  """'52.50 ± 1.25 (3) [49.1, 55.9]'; '—' for no runs."""
  if summary is None:
    return "—"
  text = f"{summary['mean']:.2f} ± {summary['std']:.2f} ({summary['n']})"
  return text + (f" [{summary['low']:.1f}, {summary['high']:.1f}]" if interval else "")


def paired_against_random(wars: Mapping[int, float], random_wars: Mapping[int, Sequence[float]]) -> dict | None:
  """A criterion against random at one level, paired by training seed: per seed, the criterion's WAR minus
  the mean WAR of random's draws trained with that seed. Two-sided one-sample t-test of those differences
  (scipy), with their mean and 95 % interval; p None where the test is undefined (one seed, or no spread)."""
  seeds = sorted(set(wars) & set(random_wars))
  if not seeds:
    return None
  differences = np.asarray([wars[t] - np.mean(random_wars[t]) for t in seeds], np.float64)
  n, mean = len(differences), float(differences.mean())
  out = {"seeds": seeds, "n": n, "mean_difference": mean, "p": None, "low": None, "high": None}
  if n > 1 and np.ptp(differences) > 0:
    test = stats.ttest_1samp(differences, 0.0)
    half = _quantile(n - 1) * float(differences.std(ddof=1)) / math.sqrt(n)
    out.update(p=float(test.pvalue), low=mean - half, high=mean + half)
  return out


def _finite(value) -> float:
  return float(value) if value is not None and math.isfinite(value) else math.nan


def bootstrap_correlations(importance: Sequence[float], drops: np.ndarray, samples: int = 1000,
                           seed: int = 0) -> dict:
  """95 % percentile intervals of Spearman ρ and Kendall τ between block importance and the accuracy drop
  averaged over seeds, resampling both the blocks and the training seeds with replacement.

  `drops`: (blocks, seeds). Resamples whose correlation is undefined (a constant input) are left out;
  `used` says how many remained."""
  importance, drops = np.asarray(importance, np.float64), np.asarray(drops, np.float64)
  blocks, seeds = drops.shape
  rng = np.random.default_rng(seed)
  rho, tau = [], []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", stats.ConstantInputWarning)
    for _ in range(samples):
      b = rng.integers(0, blocks, blocks)
      drop = drops[b][:, rng.integers(0, seeds, seeds)].mean(axis=1)
      rho.append(_finite(stats.spearmanr(importance[b], drop).statistic))
      tau.append(_finite(stats.kendalltau(importance[b], drop).statistic))

  def interval(values):
    values = np.asarray(values)[np.isfinite(values)]
    if not len(values):
      return None
    return [float(np.percentile(values, 100 * (1 - LEVEL) / 2)), float(np.percentile(values, 100 * (1 + LEVEL) / 2))]
  return {"spearman_interval": interval(rho), "kendall_interval": interval(tau), "samples": samples,
          "used": int(np.isfinite(rho).sum()), "resampled": "blocks and training seeds"}
