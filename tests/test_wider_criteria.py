"""SPEC §10's criteria: α and spectral entropy against a numpy reference of the same estimator; Block
Influence and angular distance against HuggingFace's hidden states; the span a prune removes; the CLI."""

import json

import jax
import numpy as np
import powerlaw
import pytest
import torch

from configs import demo
from gardener_jax import calibration, criteria, load_checkpoint, load_pretraining_checkpoint, pipeline, prune
from gardener_jax.cli import main as gardener
from gardener_jax.data import builders, sources
from gardener_jax.entropy import BLOCK_MATRICES
from gardener_jax.models import ModelConfig, init_params
from gardener_jax.spectral import block_spectra
from tests import factories
from tests.test_prune import _torch_without
from tools.convert_torch import convert

CONFIG = ModelConfig(width=48, depth=3, num_heads=4, mlp_dim=192, num_classes=5, num_frames=4, image_size=32)


# --- data-free: the numpy / scipy reference -------------------------------------------------------------

def _reference_spectrum(w: np.ndarray) -> tuple[np.ndarray, int]:
  """Ascending eigenvalues of WᵀW within numpy's matrix_rank tolerance (float32 ε), in float64."""
  sv = np.linalg.svd(w.astype(np.float64), compute_uv=False)
  kept = sv > sv.max() * max(w.shape) * np.finfo(np.float32).eps
  return np.sort(sv[kept] ** 2), int(kept.sum())


def _reference_alpha(w: np.ndarray) -> tuple[float, float]:
  """(α, λ_min) by Clauset et al.: Hill estimate per candidate λ_min, the one of smallest KS distance."""
  eigenvalues, _ = _reference_spectrum(w)
  best = (np.inf, np.nan, np.nan)
  for start in range(len(eigenvalues) - 1):
    tail = eigenvalues[start:]
    n = len(tail)
    alpha = 1 + n / np.sum(np.log(tail / tail[0]))
    distance = np.max(np.abs(1 - (tail / tail[0]) ** (1 - alpha) - np.arange(n) / n))
    if distance < best[0]:
      best = (distance, alpha, tail[0])
  return best[1], best[2]


def _reference_spectral_entropy(w: np.ndarray) -> float:
  _, rank = _reference_spectrum(w)
  sv2 = np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2
  p = sv2 / sv2.sum()
  p = p[p > 0]
  return float(-(p * np.log(p)).sum() / np.log(rank))


def _matrices(kind: str, seed: int) -> list[np.ndarray]:
  """A block's four matrices (in, out): Gaussian, or heavy-tailed (Student t with 2.5 degrees of freedom,
  columns scaled by a Pareto law), like the spectra of trained weights."""
  rng = np.random.default_rng(seed)
  shapes = [(CONFIG.width, 3 * CONFIG.width), (CONFIG.width, CONFIG.width), (CONFIG.width, CONFIG.mlp_dim),
            (CONFIG.mlp_dim, CONFIG.width)]
  if kind == "gaussian":
    return [0.02 * rng.standard_normal(s).astype(np.float32) for s in shapes]
  return [(0.02 * rng.standard_t(2.5, s) * (1 + rng.pareto(2.0, s[1]))).astype(np.float32) for s in shapes]


def _params_with(blocks: list[list[np.ndarray]]):
  params = init_params(CONFIG)
  stacked = [np.stack([block[i] for block in blocks]) for i in range(4)]
  out = {**params, "blocks": {**params["blocks"]}}
  for (group, name, leaf), value in zip(BLOCK_MATRICES, stacked):
    assert out["blocks"][group][name][leaf].shape == value.shape
    out["blocks"][group] = {**out["blocks"][group], name: {**out["blocks"][group][name], leaf: value}}
  return out


@pytest.mark.parametrize("kinds", [("gaussian", "gaussian", "gaussian"), ("heavy", "heavy", "heavy"),
                                   ("gaussian", "heavy", "gaussian")])
def test_alpha_and_spectral_entropy_match_the_numpy_reference(kinds):
  blocks = [_matrices(kind, seed) for seed, kind in enumerate(kinds)]
  params = _params_with(blocks)
  spectra = block_spectra(params)
  reference = np.array([[_reference_alpha(w) for w in block] for block in blocks])  # (depth, 4, 2)
  np.testing.assert_allclose(spectra.xmin, reference[..., 1], rtol=1e-4)
  np.testing.assert_allclose(spectra.alpha, reference[..., 0], rtol=1e-4)
  np.testing.assert_allclose(spectra.spectral_entropy,
                             [[_reference_spectral_entropy(w) for w in block] for block in blocks], rtol=1e-5)

  alpha = criteria.rank(params, CONFIG, "alpha")
  np.testing.assert_allclose(alpha.scores, reference[..., 0].mean(axis=1), rtol=1e-4)
  entropy = criteria.rank(params, CONFIG, "spectral_entropy")
  np.testing.assert_allclose(entropy.scores, spectra.spectral_entropy.mean(axis=1), rtol=1e-6)
  assert alpha.calibration is None and entropy.calibration is None  # data-free
  if kinds == ("gaussian", "heavy", "gaussian"):
    # SPEC §10: the heavy-tailed (trained-like) block has the smaller α and the less uniform spectrum, so
    # both criteria remove the random-like blocks first.
    assert alpha.scores[1] < min(alpha.scores[0], alpha.scores[2])
    assert entropy.scores[1] < min(entropy.scores[0], entropy.scores[2])
    assert alpha.removal_order[-1] == entropy.removal_order[-1] == 2


def test_alpha_equals_the_powerlaw_package_fit():
  """An independent implementation: `powerlaw.Fit` (continuous, no xmax), as WeightWatcher fits."""
  blocks = [_matrices("gaussian", 5), _matrices("heavy", 6), _matrices("heavy", 7)]
  spectra = block_spectra(_params_with(blocks))
  for i, block in enumerate(blocks):
    for j, w in enumerate(block):
      fit = powerlaw.Fit(np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2, verbose=False).power_law
      np.testing.assert_allclose([spectra.alpha[i, j], spectra.xmin[i, j], spectra.ks_distance[i, j]],
                                 [fit.alpha, fit.xmin, fit.D], rtol=1e-4)


def test_alpha_names_a_matrix_without_a_tail():
  blocks = [_matrices("gaussian", seed) for seed in range(3)]
  blocks[1][1] = np.zeros_like(blocks[1][1])  # block 2's attention projection
  with pytest.raises(ValueError, match=r"no power-law tail to fit in block 2 attn/proj \(numerical rank 0\)"):
    criteria.rank(_params_with(blocks), CONFIG, "alpha")


def test_wider_criteria_directions_and_data():
  assert {n: (criteria.get(n).remove, criteria.get(n).needs_data) for n in
          ("alpha", "spectral_entropy", "block_influence", "angular_distance")} == {
      "alpha": ("highest", False), "spectral_entropy": ("highest", False),
      "block_influence": ("lowest", True), "angular_distance": ("lowest", True)}
  with pytest.raises(ValueError, match="calibration clips"):
    criteria.rank(init_params(CONFIG), CONFIG, "block_influence")


def test_a_rank_deficient_matrix_fits_above_the_numerical_rank():
  blocks = [_matrices("gaussian", seed) for seed in range(3)]
  blocks[0][3] = blocks[0][3] @ np.diag((np.arange(CONFIG.width) < 10).astype(np.float32))  # fc2 of rank 10
  spectra = block_spectra(_params_with(blocks))
  assert spectra.rank[0].tolist() == [CONFIG.width, CONFIG.width, CONFIG.width, 10]
  np.testing.assert_allclose(spectra.alpha[0, 3], _reference_alpha(blocks[0][3])[0], rtol=1e-4)
  np.testing.assert_allclose(spectra.spectral_entropy[0, 3], _reference_spectral_entropy(blocks[0][3]), rtol=1e-5)


# --- calibration: PyTorch reference on HuggingFace's hidden states -----------------------------------------

def _torch_similarity(torch_model, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Block Influence of each block and angle[i, j] (mean arccos / π) from output_hidden_states."""
  with torch.no_grad():
    hidden = torch_model.videomae(torch.from_numpy(clips).permute(0, 1, 4, 2, 3).double(),
                                  output_hidden_states=True).hidden_states
  cos = torch.stack([torch.stack([torch.nn.functional.cosine_similarity(a, b, dim=-1) for b in hidden])
                     for a in hidden])  # (L + 1, L + 1, B, N)
  angle = (torch.arccos(cos.clamp(-1, 1)) / torch.pi).mean(dim=(2, 3)).numpy()
  influence = np.array([1 - cos[i, i + 1].mean().item() for i in range(len(hidden) - 1)])
  return influence, angle


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  directory = tmp_path_factory.mktemp("calibration")
  torch_model = factories.hf_classifier(seed=3, depth=6)
  torch_model.save_pretrained(directory / "hf")
  convert(directory / "hf", directory / "flax")
  return directory / "flax", torch_model.double()


def test_a_pretraining_checkpoint_is_scored_on_its_encoder(tmp_path):
  torch_model = factories.hf_pretraining(seed=4, depth=4)
  torch_model.save_pretrained(tmp_path / "hf")
  convert(tmp_path / "hf", tmp_path / "flax")
  _, params, config = load_pretraining_checkpoint(tmp_path / "flax")
  assert config.is_pretraining
  clips = factories.clips(batch=3, seed=5)
  _, angle = _torch_similarity(torch_model.double(), clips)
  np.testing.assert_allclose(calibration.hidden_state_similarity(params, config, clips).angle, angle, atol=1e-5)


@pytest.mark.parametrize("removed", [(), (2, 5)])
def test_block_influence_and_angular_distance_match_huggingface_hidden_states(model, removed, tmp_path):
  checkpoint, torch_model = model
  if removed:
    prune.prune_checkpoint(checkpoint, tmp_path / "pruned", blocks=list(removed))
    checkpoint, torch_model = tmp_path / "pruned", _torch_without(torch_model, removed)
  _, params, config = load_checkpoint(checkpoint)
  clips = factories.clips(batch=5, seed=1)
  influence, angle = _torch_similarity(torch_model, clips)
  similarity = calibration.hidden_state_similarity(params, config, clips, batch_size=2)  # 3 forwards
  np.testing.assert_allclose(similarity.angle, angle, atol=1e-5)

  clips = calibration.Calibration(clips, "5 random clips")
  bi = criteria.rank(params, config, "block_influence", calibration=clips)
  np.testing.assert_allclose(bi.scores, influence, atol=1e-5)
  assert bi.block_ids == list(config.kept_blocks) and bi.calibration == {"clips": 5, "source": "5 random clips"}
  ad = criteria.rank(params, config, "angular_distance", calibration=clips)
  for k in range(1, config.depth):
    spans = np.diagonal(angle, offset=k)
    start = int(np.flatnonzero(spans == spans.min())[-1])
    assert ad.blocks_to_remove(k) == list(config.kept_blocks[start:start + k])


def test_a_prune_by_angular_distance_deletes_exactly_one_contiguous_span(model, tmp_path):
  checkpoint, torch_model = model
  clips = factories.clips(batch=4, seed=2)
  _, angle = _torch_similarity(torch_model, clips)
  spans = np.diagonal(angle, offset=3)
  start = int(np.argmin(spans))
  assert np.sort(spans)[1] - spans.min() > 1e-4  # the reference's choice is clear
  span = list(range(start + 1, start + 4))

  result, ranking = prune.prune_checkpoint(checkpoint, tmp_path / "ad", criterion="angular_distance", remove=3,
                                           calibration=calibration.Calibration(clips, "4 clips"))
  assert result["removed_blocks"] == span
  assert result["kept_blocks"] == [b for b in range(1, 7) if b not in span]
  assert result["ranking"]["calibration"]["clips"] == 4
  prune.prune_checkpoint(checkpoint, tmp_path / "explicit", blocks=span)
  for x, y in zip(jax.tree.leaves(load_checkpoint(tmp_path / "ad")[1]),
                  jax.tree.leaves(load_checkpoint(tmp_path / "explicit")[1]), strict=True):
    np.testing.assert_array_equal(x, y)
  assert "data: calibration, 4 clips" in (tmp_path / "ad" / "prune_report.md").read_text()


# --- the command line, with clips drawn from a prepared dataset -----------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  builders.build("synthetic_motion", path, "tiny")
  return path


def test_rank_and_prune_with_calibration_clips_from_a_prepared_dataset(model, data_dir, tmp_path, capsys):
  checkpoint, _ = model
  _, params, config = load_checkpoint(checkpoint)
  flags = ["--calibration", "synthetic_motion", "--data_dir", str(data_dir), "--data_config", "tiny",
           "--calibration_clips", "3", "--seed", "4"]
  assert gardener(["rank", str(checkpoint), "--criterion", "block_influence", *flags,
                   "--json", str(tmp_path / "bi.json")]) == 0
  out = capsys.readouterr().out
  assert "data: calibration, 3 clips of synthetic_motion/tiny split 'train' (seed 4)" in out
  ranking = json.loads((tmp_path / "bi.json").read_text())
  clips = calibration.from_dataset("synthetic_motion", data_dir, config, data_config="tiny", num_clips=3,
                                   seed=4)
  assert clips.clips.shape == (3, 4, 32, 32, 3)
  np.testing.assert_allclose(ranking["scores"], criteria.rank(params, config, "block_influence",
                                                              calibration=clips).scores, rtol=1e-12)
  assert ranking["calibration"]["clips"] == 3

  assert gardener(["prune", str(checkpoint), "--criterion", "angular_distance", "--remove", "2", *flags,
                   "--out", str(tmp_path / "pruned")]) == 0
  removed = json.loads((tmp_path / "pruned" / "prune_report.json").read_text())["removed_blocks"]
  assert len(removed) == 2 and removed[1] == removed[0] + 1

  assert gardener(["rank", str(checkpoint), "--criterion", "angular_distance"]) == 1
  assert "give --calibration NAME and --data_dir DIR" in capsys.readouterr().err
  assert gardener(["rank", str(checkpoint), "--criterion", "alpha", *flags]) == 1
  assert "criterion 'alpha' is data-free" in capsys.readouterr().err
  assert gardener(["rank", str(checkpoint), "--criterion", "block_influence", *flags[:-4],
                   "--calibration_clips", "99"]) == 1
  assert ("calibration_clips 99: synthetic_motion/tiny split 'train' has only 16 decodable videos"
          in capsys.readouterr().err)


def test_a_job_scores_on_clips_of_its_own_training_split(model, data_dir, tmp_path):
  checkpoint, _ = model
  config = demo.get_config()
  config.data.update(data_dir=str(data_dir), config="tiny", classes=(), num_frames=4, image_size=32, sampling_rate=2)
  config.prune.update(criterion="block_influence", ratio=0.0, remove=2, calibration_clips=5)
  out, report = pipeline.prune_stage(config, checkpoint, tmp_path)
  assert report["ranking"]["calibration"] == {"clips": 5, "source": "5 clips of synthetic_motion/tiny training split "
                                                                    "(seed 0)"}
  _, params, model_config = load_checkpoint(checkpoint)
  train = sources.from_config(config.data, (), config.seed).train  # the validation hold-out is not drawn from
  expected = criteria.rank(params, model_config, "block_influence",
                           calibration=calibration.draw_clips(train, model_config, 5, 0, sampling_rate=2))
  assert report["ranking"]["scores"] == expected.scores
  assert report["removed_blocks"] == sorted(expected.removal_order[:2])
