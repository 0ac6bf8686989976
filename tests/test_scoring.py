"""Block scores against plain numpy / pandas / scipy references on the same weights (SPEC §2, §4)."""

import json

import ml_dtypes
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from gardener_jax import criteria
from gardener_jax.entropy import BLOCK_MATRICES, block_entropy, mutual_information_matrix
from gardener_jax.models import ModelConfig, init_params

CONFIG = ModelConfig(width=32, depth=4, num_heads=4, mlp_dim=128, num_classes=5, num_frames=4, image_size=32)
SPEC_ENTROPY = [9.54843, 9.41702, 9.38557, 9.39459, 9.38296, 9.38941, 9.37754, 9.37866, 9.36123, 9.35138, 9.35394,
                9.34871]
SPEC_ORDER = [12, 10, 11, 9, 7, 8, 5, 3, 6, 4, 2, 1]


def _with_blocks(params, blocks: np.ndarray, dtype=np.float32):
  """Params whose four scored matrices hold `blocks` (depth, N) in SPEC order (qkv, proj, fc1, fc2)."""
  params = {**params, "blocks": {**params["blocks"]}}
  offset = 0
  for group, name, leaf in BLOCK_MATRICES:
    shape = params["blocks"][group][name][leaf].shape
    size = int(np.prod(shape[1:]))
    params["blocks"][group] = {**params["blocks"][group],
                               name: {**params["blocks"][group][name], leaf: blocks[:, offset:offset + size].reshape(shape).astype(dtype)}}
    offset += size
  assert offset == blocks.shape[1]
  return params


def _reference_blocks(params) -> np.ndarray:
  return np.stack([np.concatenate([np.asarray(params["blocks"][g][n][l][i], np.float32).ravel()
                                   for g, n, l in BLOCK_MATRICES]) for i in range(CONFIG.depth)])


def _pandas_entropy(values) -> tuple[float, int]:
  counts = pd.Series(values).value_counts().to_numpy()
  p = counts / counts.sum()
  return float(-(p * np.log(p)).sum()), len(counts)


def _weights(kind: str, seed=0) -> np.ndarray:
  n = 12 * CONFIG.width**2  # 4 D² attention + 8 D² MLP per block
  w = np.random.default_rng(seed).standard_normal((CONFIG.depth, n)).astype(np.float32) * 0.05
  w[:, :50] = 0.0
  w[:, 50:100] = -0.0  # one value with +0.0, as pandas counts it
  if kind == "float16_grid":
    w = w.astype(np.float16).astype(np.float32)
  return w


@pytest.mark.parametrize("kind", ["float16_grid", "float32"])
def test_exact_entropy_matches_pandas_value_counts(kind):
  params = _with_blocks(init_params(CONFIG), _weights(kind))
  stats = block_entropy(params, "exact")
  assert stats.engine == ("histogram" if kind == "float16_grid" else "sort")
  reference = [_pandas_entropy(block) for block in _reference_blocks(params)]
  np.testing.assert_allclose(stats.entropy, [h for h, _ in reference], rtol=1e-6)
  np.testing.assert_array_equal(stats.distinct, [d for _, d in reference])
  assert stats.num_weights == 12 * CONFIG.width**2
  assert stats.nearly_all_distinct() == (kind == "float32")


@pytest.mark.parametrize("discretize,reference", [
    ("float16", lambda w: w.astype(np.float16).astype(np.float32)),
    ("bfloat16", lambda w: w.astype(ml_dtypes.bfloat16).astype(np.float32)),
    ("hist:100", lambda w: np.digitize(w, np.histogram_bin_edges(w, 100)[1:-1])),
])
def test_discretised_entropy_matches_numpy(discretize, reference):
  params = _with_blocks(init_params(CONFIG), _weights("float32", seed=1))
  stats = block_entropy(params, discretize)
  expected = [_pandas_entropy(reference(block)) for block in _reference_blocks(params)]
  np.testing.assert_allclose(stats.entropy, [h for h, _ in expected], rtol=1e-6)
  np.testing.assert_array_equal(stats.distinct, [d for _, d in expected])


def test_low_precision_params_are_scored_exactly():
  w = _weights("float16_grid", seed=2)
  for dtype in (np.float16, ml_dtypes.bfloat16):
    params = _with_blocks(init_params(CONFIG), w.astype(dtype).astype(np.float32), dtype)
    reference = [_pandas_entropy(block) for block in _reference_blocks(params)]
    np.testing.assert_allclose(block_entropy(params).entropy, [h for h, _ in reference], rtol=1e-6)


STAT_REFERENCES = {
    "mean": lambda w: np.abs(w).mean(),
    "l1": lambda w: np.abs(w).sum(),
    "l2": lambda w: np.sqrt((w.astype(np.float64) ** 2).sum()),
    "variance": lambda w: np.abs(w).var(),
    "std": lambda w: np.abs(w).std(),
    "kurtosis": lambda w: scipy.stats.kurtosis(w),
    "value_entropy": lambda w: scipy.stats.entropy(np.abs(w)),
}


@pytest.mark.parametrize("name", STAT_REFERENCES)
def test_weight_statistics_match_numpy_scipy(name):
  params = init_params(CONFIG, 3)
  expected = [STAT_REFERENCES[name](block.astype(np.float64)) for block in _reference_blocks(params)]
  np.testing.assert_allclose(criteria.rank(params, CONFIG, name).scores, expected, rtol=1e-4)


@pytest.mark.parametrize("kind", ["float16_grid", "float32"])
def test_mutual_information_matches_spec_definition(kind):
  params = _with_blocks(init_params(CONFIG), _weights(kind, seed=4))
  blocks = _reference_blocks(params)
  h = [_pandas_entropy(b)[0] for b in blocks]
  mi = np.array([[h[j] + h[k] - _pandas_entropy(np.concatenate([blocks[j], blocks[k]]))[0] for k in range(4)]
                 for j in range(4)])
  off = ~np.eye(4, dtype=bool)
  normalised = np.where(off, (mi - mi[off].min()) / (mi[off].max() - mi[off].min()), 0).sum(axis=1)
  expected = (normalised - normalised.min()) / (normalised.max() - normalised.min())
  ranking = criteria.rank(params, CONFIG, "mutual_information")
  np.testing.assert_allclose(ranking.scores, expected, atol=1e-4)
  assert ranking.removal_order[0] == int(np.argmax(expected)) + 1


def test_spec_reference_entropies_reproduce_the_pruning_order():
  """A checkpoint whose 12 block entropies rank like SPEC §2's gives SPEC §3's removal order."""
  config = CONFIG.replace(width=48, depth=12, mlp_dim=192)
  n = 12 * 48**2
  # block l holds K_l distinct float16 values, near-uniformly: H_l ≈ ln K_l, monotone in the SPEC value.
  distinct = [int(np.exp(h - 0.2)) for h in SPEC_ENTROPY]
  pool = np.arange(1, max(distinct) + 1, dtype=np.uint16).view(np.float16).astype(np.float32)
  blocks = np.stack([pool[np.arange(n) % k] for k in distinct])
  params = _with_blocks(init_params(config), blocks)
  ranking = criteria.rank(params, config, "entropy")
  np.testing.assert_array_equal(ranking.entropy.distinct, distinct)
  assert ranking.removal_order == SPEC_ORDER
  spec_table = {1: [12], 3: [10, 11, 12], 5: [7, 9, 10, 11, 12], 7: [5, 7, 8, 9, 10, 11, 12],
                9: [3, 5, 6, 7, 8, 9, 10, 11, 12], 11: list(range(2, 13))}
  for k, removed in spec_table.items():
    assert sorted(ranking.removal_order[:k]) == removed


def test_removal_order_directions_and_ties():
  assert criteria.removal_order(np.array([3.0, 1.0, 2.0]), criteria.LOWEST, [1, 2, 3]) == [2, 3, 1]
  assert criteria.removal_order(np.array([3.0, 1.0, 2.0]), criteria.HIGHEST, [1, 2, 3]) == [1, 3, 2]
  assert criteria.removal_order(np.array([1.0, 1.0, 0.0, 1.0]), criteria.LOWEST, [2, 5, 7, 9]) == [7, 9, 5, 2]
  assert criteria.removal_order(np.array([1.0, 1.0, 2.0]), criteria.HIGHEST, [1, 2, 3]) == [3, 2, 1]


def test_simple_criteria_and_the_oracle(tmp_path):
  config = CONFIG.replace(depth=3, kept_blocks=(2, 5, 9), original_depth=12)
  params = init_params(config)
  assert criteria.rank(params, config, "first").removal_order == [2, 5, 9]
  assert criteria.rank(params, config, "last").removal_order == [9, 5, 2]
  orders = {tuple(criteria.rank(params, config, "random", seed=s).removal_order) for s in range(6)}
  assert len(orders) > 1 and all(sorted(o) == [2, 5, 9] for o in orders)
  assert criteria.rank(params, config, "random", seed=3).removal_order == criteria.rank(
      params, config, "random", seed=3).removal_order

  oracle = tmp_path / "oracle.json"
  oracle.write_text(json.dumps({"accuracy": {str(b): a for b, a in zip(range(1, 13), [46.73, 90.58, 86.14, 74.65,
                                                                                       88.32, 87.43, 88.51, 88.02,
                                                                                       90.79, 90.30, 91.09, 91.29])}}))
  ranking = criteria.rank(params, config, "oracle", oracle_file=str(oracle))
  assert ranking.scores == [90.58, 88.32, 90.79] and ranking.removal_order == [9, 2, 5]
  with pytest.raises(ValueError, match="needs the per-block accuracy file"):
    criteria.rank(params, config, "oracle")
  oracle.write_text(json.dumps({"accuracy": {"2": 1.0}}))
  with pytest.raises(ValueError, match=r"no accuracy for blocks \[5, 9\]"):
    criteria.rank(params, config, "oracle", oracle_file=str(oracle))
  with pytest.raises(ValueError, match="unknown criterion 'magnitude'"):
    criteria.rank(params, config, "magnitude")


def _entropy_of(counts: np.ndarray) -> float:
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def test_mutual_information_under_hist_bins_each_pair_on_its_common_range():
  w = _weights("float32", seed=5)
  w[1] = 3 * w[0]  # block 2 is block 1 scaled by 3
  params = _with_blocks(init_params(CONFIG), w)
  blocks = _reference_blocks(params)
  bins = 64

  def reference_mi(j, k):
    span = (min(blocks[j].min(), blocks[k].min()), max(blocks[j].max(), blocks[k].max()))
    cj, ck = (np.histogram(blocks[i], bins, span)[0] for i in (j, k))
    return _entropy_of(cj) + _entropy_of(ck) - _entropy_of(cj + ck)

  expected = np.array([[reference_mi(j, k) for k in range(CONFIG.depth)] for j in range(CONFIG.depth)])
  ours = mutual_information_matrix(params, block_entropy(params, f"hist:{bins}"), f"hist:{bins}")
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
  # A block with itself shares all its information; with a scaled copy, binned on one grid, far less
  # (each block on its own range would make the copy's histogram identical, and MI(1, 2) = H_1).
  assert ours[0, 0] == pytest.approx(_entropy_of(np.histogram(blocks[0], bins)[0]), abs=1e-9)
  assert ours[0, 1] < ours[0, 0] - 0.5  # 2.86 against 3.59 nats
  ranking = criteria.rank(params, CONFIG, "mutual_information", f"hist:{bins}")
  np.testing.assert_allclose(ranking.scores, criteria.mutual_information_scores(expected), atol=1e-9)
