"""Block-importance criteria: one registry, each criterion one small scoring function (SPEC §4, §10).

A scoring function maps a `ScoringInput` to one score per block (block order); the registry entry
says which end of the scores is removed first. Ties are broken deterministically: among equal
scores the block nearer the output (the higher original block id) is removed first. A criterion that
chooses each level's blocks as a set (angular distance: one contiguous span per k) adds `select`.
Criteria marked `needs_data` read calibration clips (`ScoringInput.calibration`); the others are data-free.

Adding a criterion is one function and its `@criterion(...)` line.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gardener_jax import spectral
from gardener_jax.calibration import Calibration, HiddenStateSimilarity, hidden_state_similarity
from gardener_jax.entropy import (BLOCK_MATRICES, BlockEntropy, Discretization, block_entropy,
                                  mutual_information_matrix, scored_blocks, scored_matrices)
from gardener_jax.models import ModelConfig

LOWEST, HIGHEST = "lowest", "highest"


@dataclasses.dataclass
class ScoringInput:
  params: dict
  config: ModelConfig
  discretization: Discretization = Discretization("exact")
  seed: int = 0
  oracle_file: str | None = None
  calibration: Calibration | None = None
  _entropy: BlockEntropy | None = None
  _spectra: spectral.BlockSpectra | None = None
  _similarity: HiddenStateSimilarity | None = None

  # Shared by the criteria that need them, each computed once.
  @property
  def entropy(self) -> BlockEntropy:
    if self._entropy is None:
      self._entropy = block_entropy(self.params, self.discretization)
    return self._entropy

  @property
  def spectra(self) -> spectral.BlockSpectra:
    if self._spectra is None:
      self._spectra = spectral.block_spectra(self.params)
    return self._spectra

  @property
  def similarity(self) -> HiddenStateSimilarity:
    if self._similarity is None:
      self._similarity = hidden_state_similarity(self.params, self.config, self.calibration.clips)
    return self._similarity


@dataclasses.dataclass(frozen=True)
class Criterion:
  name: str
  score: Callable[[ScoringInput], np.ndarray]
  remove: str  # which end is removed first: LOWEST or HIGHEST
  description: str
  needs_data: bool = False  # scores read `ScoringInput.calibration`
  select: Callable[[ScoringInput, int], list[int]] | None = None  # k → the blocks to remove, if not the first k


CRITERIA: dict[str, Criterion] = {}


def criterion(name: str, remove: str, description: str, **options):
  def register(score):
    CRITERIA[name] = Criterion(name, score, remove, description, **options)
    return score
  return register


def _per_block(statistic):
  """Applies `statistic(w)` (w: one block's four matrices flattened together, float32) to every block."""
  @jax.jit
  def run(blocks):
    return jax.lax.map(lambda rows: statistic(jnp.concatenate([r.astype(jnp.float32) for r in rows])),
                       scored_matrices(blocks))
  return lambda inputs: np.asarray(run(scored_blocks(inputs.params)), np.float64)


def _value_entropy(w):
  p = jnp.abs(w) / jnp.sum(jnp.abs(w))
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def _kurtosis(w):  # Fisher, biased: scipy.stats.kurtosis's defaults
  centred = w - w.mean()
  return jnp.mean(centred**4) / jnp.mean(centred**2) ** 2 - 3.0


@criterion("entropy", LOWEST, "Gardener: weight-number entropy H of the block's four matrices")
def _entropy(inputs):
  return inputs.entropy.entropy.astype(np.float64)


@criterion("random", LOWEST, "a seeded random permutation")
def _random(inputs):
  return np.random.default_rng(inputs.seed).permutation(inputs.config.depth).astype(np.float64)


@criterion("first", LOWEST, "the original block id: the earliest blocks go first")
def _first(inputs):
  return np.asarray(inputs.config.kept_blocks, np.float64)


@criterion("last", HIGHEST, "the original block id: the latest blocks go first")
def _last(inputs):
  return np.asarray(inputs.config.kept_blocks, np.float64)


criterion("mean", LOWEST, "mean |w|")(_per_block(lambda w: jnp.mean(jnp.abs(w))))
criterion("l1", LOWEST, "L1 norm Σ|w|")(_per_block(lambda w: jnp.sum(jnp.abs(w))))
criterion("l2", LOWEST, "L2 norm sqrt(Σ w²)")(_per_block(lambda w: jnp.sqrt(jnp.sum(w * w))))
criterion("variance", LOWEST, "variance of |w|")(_per_block(lambda w: jnp.var(jnp.abs(w))))
criterion("std", LOWEST, "standard deviation of |w|")(_per_block(lambda w: jnp.std(jnp.abs(w))))
criterion("kurtosis", HIGHEST, "Fisher kurtosis of the signed weights")(_per_block(_kurtosis))
criterion("value_entropy", LOWEST, "Shannon entropy of |w| / ‖w‖₁")(_per_block(_value_entropy))


@criterion("alpha", HIGHEST, "WeightWatcher α: power-law exponent of the eigenvalue tail of WᵀW (Hill estimate, "
           "λ_min by the smallest KS distance), mean over the four matrices")
def _alpha(inputs):
  alpha = inputs.spectra.alpha
  if unfitted := [f"block {inputs.config.kept_blocks[i]} {'/'.join(BLOCK_MATRICES[j][:2])} "
                  f"(numerical rank {inputs.spectra.rank[i, j]})" for i, j in zip(*np.nonzero(np.isnan(alpha)))]:
    raise ValueError(f"criterion 'alpha': no power-law tail to fit in {', '.join(unfitted)}: a matrix needs at least "
                     "2 distinct eigenvalues within its numerical rank")
  return alpha.mean(axis=1).astype(np.float64)


@criterion("spectral_entropy", HIGHEST, "entropy of σ² / Σσ² over ln(rank), mean over the four matrices")
def _spectral_entropy(inputs):
  return inputs.spectra.spectral_entropy.mean(axis=1).astype(np.float64)


@criterion("block_influence", LOWEST, "ShortGPT Block Influence: 1 − mean cos(block input, block output) over "
           "the tokens of the calibration clips", needs_data=True)
def _block_influence(inputs):
  return inputs.similarity.block_influence()


def _contiguous_span(inputs, k: int) -> list[int]:
  distances = inputs.similarity.span_distances(k)
  start = len(distances) - 1 - int(np.argmin(distances[::-1]))  # ties: the span nearer the output
  return list(inputs.config.kept_blocks[start:start + k])


@criterion("angular_distance", LOWEST, "Gromov et al.: mean arccos(cos(h_ℓ, h_ℓ+k)) / π over the calibration "
           "tokens; k blocks are removed as the one contiguous span of smallest distance (scores: k = 1)",
           needs_data=True, select=_contiguous_span)
def _angular_distance(inputs):
  return inputs.similarity.span_distances(1)


@criterion("mutual_information", HIGHEST,
           "Σ_k MI(j, k), MI = H_j + H_k − H(j ∪ k), min-max normalised off the diagonal and again per block")
def _mutual_information(inputs):
  return mutual_information_scores(mutual_information_matrix(inputs.params, inputs.entropy, inputs.discretization))


def mutual_information_scores(mi: np.ndarray) -> np.ndarray:
  off_diagonal = ~np.eye(len(mi), dtype=bool)
  normalised = np.where(off_diagonal, _min_max(mi, off_diagonal), 0.0)
  return _min_max(normalised.sum(axis=1))


def _min_max(x: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
  values = x[where] if where is not None else x
  span = values.max() - values.min()
  return (x - values.min()) / span if span > 0 else np.zeros_like(x, dtype=np.float64)


@criterion("oracle", HIGHEST, "accuracy after removing the block alone and finetuning (read from --oracle)")
def _oracle(inputs):
  if not inputs.oracle_file:
    raise ValueError("criterion 'oracle' needs the per-block accuracy file (--oracle FILE)")
  accuracy = read_oracle(inputs.oracle_file)
  missing = [b for b in inputs.config.kept_blocks if b not in accuracy]
  if missing:
    raise ValueError(f"{inputs.oracle_file}: no accuracy for blocks {missing}; it has {sorted(accuracy)}")
  return np.asarray([accuracy[b] for b in inputs.config.kept_blocks], np.float64)


def read_oracle(path) -> dict[int, float]:
  """Per-block accuracy after single-block removal: JSON {"accuracy": {"<block id>": acc, ...}}."""
  path = pathlib.Path(path)
  try:
    accuracy = json.loads(path.read_text())["accuracy"]
    return {int(block): float(value) for block, value in accuracy.items()}
  except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: expected JSON {{\"accuracy\": {{\"<block id>\": <accuracy>, ...}}}} ({e})") from None


def get(name: str) -> Criterion:
  if name not in CRITERIA:
    raise ValueError(f"unknown criterion {name!r}; known: {', '.join(CRITERIA)}")
  return CRITERIA[name]


def removal_order(scores: np.ndarray, remove: str, block_ids) -> list[int]:
  """Original block ids, the first to remove first; ties go to the higher block id."""
  block_ids = np.asarray(block_ids)
  key = scores if remove == LOWEST else -np.asarray(scores)
  return [int(block_ids[i]) for i in np.lexsort((-block_ids, key))]


@dataclasses.dataclass(frozen=True)
class Ranking:
  criterion: str
  discretization: str
  block_ids: list[int]
  scores: list[float]
  removal_order: list[int]
  entropy: BlockEntropy | None
  calibration: dict | None = None  # the clips the scores read; None: data-free
  selections: dict[int, list[int]] | None = None  # k → blocks, for criteria that choose a set per level

  @classmethod
  def from_dict(cls, d: dict) -> Ranking:
    """A ranking saved with `to_dict` (without the entropy statistics' details)."""
    selections = {int(k): blocks for k, blocks in d["selections"].items()} if d.get("selections") else None
    return cls(d["criterion"], d["discretize"], d["block_ids"], d["scores"], d["removal_order"], None,
               d.get("calibration"), selections)

  def blocks_to_remove(self, k: int) -> list[int]:
    return list(self.selections[k]) if self.selections else self.removal_order[:k]

  def to_dict(self) -> dict:
    d = {"criterion": self.criterion, "discretize": self.discretization, "num_blocks": len(self.block_ids),
         "block_ids": self.block_ids, "scores": self.scores, "removal_order": self.removal_order,
         "remove_first": CRITERIA[self.criterion].remove, "calibration": self.calibration}
    if self.selections:
      d["selections"] = {str(k): blocks for k, blocks in self.selections.items()}
    if self.entropy is not None:
      d.update(distinct_values=self.entropy.distinct.tolist(), efficiency=self.entropy.efficiency.tolist(),
               num_weights=self.entropy.num_weights, entropy_engine=self.entropy.engine)
    return d


def rank(params, config: ModelConfig, name: str = "entropy", discretization: str | Discretization = "exact",
         seed: int = 0, oracle_file: str | None = None,
         calibration: Calibration | None = None) -> Ranking:
  if isinstance(discretization, str):
    discretization = Discretization.parse(discretization)
  spec = get(name)
  if spec.needs_data and calibration is None:
    raise ValueError(f"criterion {name!r} scores blocks on calibration clips: name a prepared dataset "
                     "(--calibration NAME --data_dir DIR)")
  inputs = ScoringInput(params, config, discretization, seed, oracle_file, calibration if spec.needs_data else None)
  scores = np.asarray(spec.score(inputs), np.float64)
  selections = {k: spec.select(inputs, k) for k in range(1, config.depth)} if spec.select else None
  return Ranking(name, str(discretization), list(config.kept_blocks), scores.tolist(),
                 removal_order(scores, spec.remove, config.kept_blocks), inputs._entropy,
                 inputs.calibration.to_dict() if inputs.calibration else None, selections)


def needs_data(name: str) -> bool:
  return get(name).needs_data
