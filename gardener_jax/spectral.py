"""Spectral statistics of the block matrices (SPEC §10): data-free, jit-compiled over the stacked blocks.

The eigenvalues of WᵀW for a matrix W (m × n) are its squared singular values λ = σ². WeightWatcher
reads two numbers from them, both computed here for each of a block's four matrices:

- α, the exponent of a power law fitted to the tail of the eigenvalues, by the method of Clauset, Shalizi
  and Newman (2009) that WeightWatcher's default fit uses (its own fit and the `powerlaw` package's
  continuous fit agree; no upper cutoff). Every eigenvalue but the largest is a candidate lower bound
  λ_min. For each, the Hill (maximum-likelihood) estimate over the n eigenvalues λ ≥ λ_min is

      α = 1 + n / Σ ln(λ / λ_min),

  and the Kolmogorov–Smirnov distance compares the tail's empirical CDF, i / n at its i-th smallest
  eigenvalue (i = 0 … n − 1), with the fitted CDF 1 − (λ / λ_min)^(1 − α). The λ_min with the smallest
  distance wins (the smallest such λ_min on ties). Eigenvalues are assumed distinct. A spectrum with no
  candidate (rank ≤ 1, or all eigenvalues equal: no tail to fit) gives NaN.
- the spectral entropy, H = −Σ p ln p / ln r with p = λ / Σ λ: 1 for a flat spectrum, near 1 for a
  random matrix, lower when a few directions dominate.

r is the numerical rank: the singular values above σ_max · max(m, n) · ε(float32) (numpy's matrix_rank
default). Only those eigenvalues may serve as λ_min (WeightWatcher drops eigenvalues below a fixed
threshold instead). Singular values come from float32 SVDs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gardener_jax.entropy import BLOCK_MATRICES, scored_blocks


def numerical_rank_mask(singular_values: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """True for the singular values (descending, last axis) above numpy's matrix_rank tolerance."""
  tolerance = singular_values[..., :1] * max(shape) * jnp.finfo(jnp.float32).eps
  return singular_values > tolerance


def power_law_fit(eigenvalues: jax.Array, usable: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(α, λ_min, KS distance) of the tail of `eigenvalues` (ascending, 1-D); `usable` marks the eigenvalues
  that may serve as λ_min. All candidate lower bounds at once: an (r, r) table of tail terms."""
  r = eigenvalues.shape[0]
  log_eig = jnp.log(jnp.where(usable, eigenvalues, 1.0))
  start, index = jnp.arange(r)[:, None], jnp.arange(r)[None, :]  # row: candidate λ_min; column: eigenvalue
  in_tail = index >= start
  tail_size = (r - jnp.arange(r)).astype(jnp.float32)
  log_ratio = jnp.where(in_tail, log_eig[None, :] - log_eig[:, None], 0.0)  # ln(λ_i / λ_min)
  spread = log_ratio.sum(axis=1)
  candidate = usable & (tail_size >= 2) & (spread > 0)
  alpha = 1.0 + tail_size / jnp.where(candidate, spread, 1.0)
  fitted_cdf = 1.0 - jnp.exp((1.0 - alpha[:, None]) * log_ratio)
  empirical_cdf = (index - start) / tail_size[:, None]
  distance = jnp.max(jnp.where(in_tail, jnp.abs(fitted_cdf - empirical_cdf), 0.0), axis=1)
  best = jnp.argmin(jnp.where(candidate, distance, jnp.inf))
  fitted = candidate.any()
  return (jnp.where(fitted, alpha[best], jnp.nan), jnp.where(fitted, eigenvalues[best], jnp.nan),
          jnp.where(fitted, distance[best], jnp.nan))


def spectral_entropy(singular_values: jax.Array, usable: jax.Array) -> jax.Array:
  """−Σ p ln p / ln r over the last axis, p = σ² / Σ σ², r = the usable count (0 when r ≤ 1)."""
  power = singular_values**2
  p = power / power.sum(axis=-1, keepdims=True)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
  rank = usable.sum(axis=-1)
  return jnp.where(rank > 1, entropy / jnp.log(jnp.maximum(rank, 2).astype(jnp.float32)), 0.0)


@dataclasses.dataclass(frozen=True)
class BlockSpectra:
  """Per block (rows, block order) and matrix (columns: qkv, proj, fc1, fc2)."""

  alpha: np.ndarray
  xmin: np.ndarray  # the fitted λ_min
  ks_distance: np.ndarray
  spectral_entropy: np.ndarray
  rank: np.ndarray


@jax.jit
def _spectra(blocks) -> dict:
  columns = []
  for group, name, leaf in BLOCK_MATRICES:
    matrices = blocks[group][name][leaf].astype(jnp.float32)  # (depth, m, n)
    sv = jnp.linalg.svd(matrices, compute_uv=False)  # (depth, r), descending
    usable = numerical_rank_mask(sv, matrices.shape[1:])
    alpha, xmin, distance = jax.vmap(power_law_fit)(sv[:, ::-1] ** 2, usable[:, ::-1])
    columns.append(dict(alpha=alpha, xmin=xmin, ks_distance=distance, spectral_entropy=spectral_entropy(sv, usable),
                        rank=usable.sum(axis=-1)))
  return jax.tree.map(lambda *column: jnp.stack(column, axis=1), *columns)


def block_spectra(params) -> BlockSpectra:
  return BlockSpectra(**{k: np.asarray(v) for k, v in _spectra(scored_blocks(params)).items()})
