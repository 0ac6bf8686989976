"""Weight-number entropy of transformer blocks (SPEC §2), jit-compiled and mapped over depth.

A block's weights are its four matrices (qkv, attention proj, fc1, fc2) taken together; biases,
norms and layer scale are left out. The entropy counts how often each value occurs:

    H = −Σ_v p(v) ln p(v),   p(v) = n(v) / N

The value grid is a choice (`Discretization`): the distinct stored values (the authors'), the
float16 or bfloat16 grid, or K equal-width bins over the block's [min, max]. Two engines compute
the counts:
- bounded codes: every value maps to one of K integer codes and the counts are a histogram
  (one scatter-add per block: no sort). Used for float16/bfloat16/hist, and for `exact` whenever
  the low 13 mantissa bits of every weight are zero (all float16- and bfloat16-grid checkpoints),
  where the 19 remaining bits are a lossless code;
- sorting: `exact` on arbitrary float32 values sorts each block's bit patterns and counts runs.
Values compare as numbers: −0.0 and +0.0 are one value.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

BLOCK_MATRICES = (("attn", "qkv", "kernel"), ("attn", "proj", "kernel"), ("mlp", "fc1", "kernel"),
                  ("mlp", "fc2", "kernel"))
_LOSSLESS_SHIFT = 13  # float32 → float16 drops 13 mantissa bits; values on a 16-bit grid have them all zero.
NEARLY_ALL_DISTINCT = 0.99  # a larger share of distinct values: H ≈ ln N for every block, the ranking is noise


@dataclasses.dataclass(frozen=True)
class Discretization:
  kind: str  # 'exact' | 'float16' | 'bfloat16' | 'hist'
  bins: int = 0  # for 'hist'

  @classmethod
  def parse(cls, text: str) -> Discretization:
    if text in ("exact", "float16", "bfloat16"):
      return cls(text)
    if text.startswith("hist:"):
      try:
        bins = int(text.removeprefix("hist:"))
      except ValueError:
        bins = 0
      if bins >= 2:
        return cls("hist", bins)
    raise ValueError(f"--discretize {text!r}: expected exact, float16, bfloat16 or hist:K with K ≥ 2")

  def __str__(self) -> str:
    return f"hist:{self.bins}" if self.kind == "hist" else self.kind


def scored_matrices(blocks) -> list[jax.Array]:
  """The four scored matrices of every block, each (depth, -1), in SPEC order (qkv, proj, fc1, fc2).

  `blocks` is `params["blocks"]`; call this inside jit, where the reshapes cost nothing.
  """
  leaves = [functools.reduce(lambda tree, key: tree[key], path, blocks) for path in BLOCK_MATRICES]
  return [jnp.reshape(leaf, (leaf.shape[0], -1)) for leaf in leaves]


def scored_blocks(params) -> dict:
  """The part of the params tree the scores read (what to pass to the jitted scoring functions)."""
  blocks = params["blocks"]
  return {"attn": {"qkv": blocks["attn"]["qkv"], "proj": blocks["attn"]["proj"]}, "mlp": blocks["mlp"]}


def _as_float32(x):
  x = x.astype(jnp.float32)  # float16 / bfloat16 checkpoints widen exactly
  return jnp.where(x == 0, jnp.zeros_like(x), x)  # one zero


def _codes(x, discretization: Discretization, lo=None, hi=None):
  """Integer codes in [0, num_codes) that identify a value's interval."""
  if discretization.kind == "exact":
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.shift_right_logical(bits, jnp.uint32(_LOSSLESS_SHIFT)).astype(jnp.int32)
  if discretization.kind in ("float16", "bfloat16"):
    bits = jax.lax.bitcast_convert_type(x.astype(discretization.kind), jnp.uint16).astype(jnp.int32)
    return jnp.where(bits == 0x8000, 0, bits)  # −0 rounds to its own pattern: fold it onto +0
  scaled = (x - lo) / jnp.where(hi > lo, hi - lo, 1.0) * discretization.bins
  return jnp.clip(jnp.floor(scaled), 0, discretization.bins - 1).astype(jnp.int32)


def _num_codes(discretization: Discretization) -> int:
  return {"exact": 1 << (32 - _LOSSLESS_SHIFT), "float16": 1 << 16, "bfloat16": 1 << 16}.get(
      discretization.kind, discretization.bins)


def entropy_of_counts(counts: np.ndarray) -> np.ndarray:
  """−Σ p ln p along the last axis, in float64 on the host: counts are exact, so H is exact to ~1e-15
  (the mutual-information criterion subtracts entropies and would lose float32's digits)."""
  counts = np.asarray(counts)
  total = counts.sum(axis=-1).astype(np.float64)
  rows, _ = np.nonzero(counts > 1)  # only repeated values contribute: 1 · ln 1 = 0
  repeated = counts[counts > 1].astype(np.float64)
  sum_c_log_c = np.bincount(rows, repeated * np.log(repeated), minlength=int(np.prod(counts.shape[:-1])))
  return np.log(total) - sum_c_log_c.reshape(total.shape) / total


@functools.partial(jax.jit, static_argnums=1)
def block_histograms(blocks, discretization: Discretization) -> tuple[jax.Array, jax.Array]:
  """(depth, num_codes) int32 value counts per block, one histogram per block (lax.map over depth),
  and whether the codes were lossless (for `exact`: every weight had its low 13 bits zero)."""
  num_codes = _num_codes(discretization)
  matrices = scored_matrices(blocks)

  def one_block(block_matrices):
    block_matrices = [_as_float32(m) for m in block_matrices]
    lo = hi = None
    if discretization.kind == "hist":
      lo = jnp.min(jnp.stack([m.min() for m in block_matrices]))
      hi = jnp.max(jnp.stack([m.max() for m in block_matrices]))
    counts = jnp.zeros(num_codes, jnp.int32)
    for m in block_matrices:  # the union's counts are the sum of each matrix's: no concatenation
      counts = counts.at[_codes(m, discretization, lo, hi)].add(1)
    return counts

  lossless = jnp.bool_(True)
  if discretization.kind == "exact":
    low_bits = jnp.uint32((1 << _LOSSLESS_SHIFT) - 1)
    lossless = jnp.all(jnp.stack([jnp.all(jax.lax.bitcast_convert_type(_as_float32(m), jnp.uint32) & low_bits == 0)
                                  for m in matrices]))
  return jax.lax.map(one_block, matrices), lossless


def _sorted_run_counts(values):
  """Counts of each distinct value of a 1-D float32 array, as an array as long as the input: each run
  of equal sorted values has its length at its first position, zeros elsewhere. The length is the
  distance to the next run's start (a reverse running minimum): a scatter-add per run ids costs 10 %
  more of the whole on CPU."""
  bits = jnp.sort(jax.lax.bitcast_convert_type(_as_float32(values), jnp.int32))
  n = bits.size
  starts = jnp.concatenate([jnp.ones(1, bool), bits[1:] != bits[:-1]])
  positions = jnp.arange(n)
  next_start = jax.lax.cummin(jnp.concatenate([jnp.where(starts, positions, n)[1:], jnp.array([n])]), reverse=True)
  return jnp.where(starts, next_start - positions, 0)


def _sum_c_log_c(counts):
  # Only repeated values contribute (1 · ln 1 = 0), so in a float32 checkpoint the sum is small and exact enough.
  c = counts.astype(jnp.float32)
  return jnp.sum(jnp.where(counts > 1, c * jnp.log(jnp.maximum(c, 1.0)), 0.0))


@jax.jit
def _sorted_entropy_terms(blocks):
  """Per block: Σ c ln c over its distinct values, and how many there are. H = ln N − Σ c ln c / N."""
  def one_block(block_matrices):
    counts = _sorted_run_counts(jnp.concatenate(block_matrices))
    return _sum_c_log_c(counts), jnp.sum(counts > 0)

  return jax.lax.map(one_block, scored_matrices(blocks))


@jax.jit
def _sorted_union_terms(blocks, j, k):
  matrices = scored_matrices(blocks)
  return _sum_c_log_c(_sorted_run_counts(jnp.concatenate([m[j] for m in matrices] + [m[k] for m in matrices])))


@dataclasses.dataclass(frozen=True)
class BlockEntropy:
  entropy: np.ndarray  # (depth,) nats
  distinct: np.ndarray  # (depth,) number of non-empty intervals
  num_weights: int  # N per block
  engine: str  # 'histogram' or 'sort'
  histograms: np.ndarray | None  # (depth, num_codes) when the engine is 'histogram'

  @property
  def efficiency(self) -> np.ndarray:
    return self.entropy / np.log(self.num_weights)

  def nearly_all_distinct(self) -> bool:
    return bool(np.all(self.distinct >= NEARLY_ALL_DISTINCT * self.num_weights))


def block_entropy(params, discretization: Discretization | str = "exact") -> BlockEntropy:
  if isinstance(discretization, str):
    discretization = Discretization.parse(discretization)
  blocks = scored_blocks(params)
  num_weights = sum(int(np.prod(np.shape(leaf)[1:])) for leaf in jax.tree.leaves(blocks) if np.ndim(leaf) == 3)
  histograms, lossless = block_histograms(blocks, discretization)
  if bool(lossless):  # any discretisation but `exact` on arbitrary float32 values
    histograms = np.asarray(histograms)
    return BlockEntropy(entropy_of_counts(histograms), (histograms > 0).sum(axis=1), num_weights, "histogram",
                        histograms)
  sum_c_log_c, distinct = _sorted_entropy_terms(blocks)
  entropy = np.log(num_weights) - np.asarray(sum_c_log_c, np.float64) / num_weights
  return BlockEntropy(entropy, np.asarray(distinct), num_weights, "sort", None)


@functools.partial(jax.jit, static_argnums=1)
def _pair_histograms_on_common_range(blocks, bins: int, pairs):
  """For each pair (j, k): (2, bins) counts of block j's and block k's weights on `bins` equal-width
  bins over the pair's common [min, max] — one grid for both, so that their counts can be added."""
  matrices = [jax.vmap(_as_float32)(m) for m in scored_matrices(blocks)]
  lo = jnp.min(jnp.stack([m.min(axis=1) for m in matrices]), axis=0)
  hi = jnp.max(jnp.stack([m.max(axis=1) for m in matrices]), axis=0)
  grid = Discretization("hist", bins)

  def one_pair(pair):
    j, k = pair[0], pair[1]
    pair_lo, pair_hi = jnp.minimum(lo[j], lo[k]), jnp.maximum(hi[j], hi[k])
    def counts(block):
      histogram = jnp.zeros(bins, jnp.int32)
      for m in matrices:
        histogram = histogram.at[_codes(m[block], grid, pair_lo, pair_hi)].add(1)
      return histogram
    return jnp.stack([counts(j), counts(k)])

  return jax.lax.map(one_pair, pairs)


def mutual_information_matrix(params, stats: BlockEntropy, discretization: Discretization | str = "exact"
                              ) -> np.ndarray:
  """MI(j, k) = H_j + H_k − H(j ∪ k), (depth, depth), H(j ∪ k) the number entropy of blocks j and k's
  weights taken together. Every term of a pair is counted on one grid: the distinct values or the
  float16/bfloat16 grid (shared by every block), or for `hist:K` K bins over the pair's common
  [min, max] (each block's own bins would cover different ranges and could not be added)."""
  if isinstance(discretization, str):
    discretization = Discretization.parse(discretization)
  depth, total = len(stats.entropy), 2 * stats.num_weights
  h = stats.entropy.astype(np.float64)
  if discretization.kind == "hist":
    pairs = np.array([(j, k) for j in range(depth) for k in range(j, depth)], np.int32)
    counts = np.asarray(_pair_histograms_on_common_range(scored_blocks(params), discretization.bins, pairs))
    h_pair = entropy_of_counts(counts.reshape(-1, counts.shape[-1])).reshape(len(pairs), 2)
    h_union = entropy_of_counts(counts.sum(axis=1, dtype=np.int64))
    mi = np.zeros((depth, depth))
    for (j, k), (h_j, h_k), union in zip(pairs, h_pair, h_union):
      mi[j, k] = mi[k, j] = h_j + h_k - union
    return mi
  if stats.histograms is not None:
    counts = stats.histograms.astype(np.int64)
    union = np.stack([entropy_of_counts(counts[j] + counts) for j in range(depth)])
  else:
    blocks = scored_blocks(params)
    union = np.diag(h)  # a block with itself: its own entropy
    for j in range(depth):
      for k in range(j + 1, depth):
        union[j, k] = union[k, j] = np.log(total) - float(_sorted_union_terms(blocks, j, k)) / total
  return h[:, None] + h[None, :] - union
