"""The data-parallel loop: device-count invariance, resume, SIGTERM, NaN stop, and learning."""

import os
import signal
import subprocess
import sys
import threading
import time

import jax
import ml_collections
import numpy as np
import pytest

from gardener_jax import optim, pipeline, train
from gardener_jax.data import builders, input_pipeline
from gardener_jax.models import ModelConfig, init_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ModelConfig(width=32, depth=2, num_heads=4, mlp_dim=64, num_classes=4, num_frames=4, image_size=32)
SPEC = input_pipeline.ClipSpec(num_frames=4, sampling_rate=2, image_size=32)


def _step_on(devices: int, out) -> dict:
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, os.path.join(ROOT, "tests", "multidevice_step.py"), str(out)], env=env, check=True)
  return dict(np.load(out))


def test_one_step_on_eight_devices_equals_one_device(tmp_path):
  one, eight = _step_on(1, tmp_path / "one.npz"), _step_on(8, tmp_path / "eight.npz")
  assert int(one.pop("devices")) == 1 and int(eight.pop("devices")) == 8
  assert sorted(one) == sorted(eight)
  # The averaged gradient is the same: its norm pins the scale (Adam's update would hide it) ...
  np.testing.assert_allclose(eight.pop("grad_norm"), one.pop("grad_norm"), rtol=1e-5)
  np.testing.assert_allclose(eight.pop("loss"), one.pop("loss"), rtol=1e-6)
  # ... and the updated params agree to a small fraction of the step (lr 1e-2; Adam's first step is
  # ±lr per weight, so tiny gradients amplify float reassociation differences).
  for key in one:
    np.testing.assert_allclose(eight[key], one[key], atol=1e-4, rtol=0, err_msg=key)


def test_two_processes_joined_by_jax_distributed_train_together(tmp_path):
  import socket

  builders.build("synthetic_motion", tmp_path / "data", "tiny")
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  script = os.path.join(ROOT, "tests", "multihost_train.py")
  workers = [subprocess.Popen([sys.executable, script, str(i), str(port), str(tmp_path / "data"), str(tmp_path / "work"),
                               str(tmp_path / f"out{i}.npz")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
  for worker in workers:
    _, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err[-3000:]
  first, second = dict(np.load(tmp_path / "out0.npz")), dict(np.load(tmp_path / "out1.npz"))
  assert int(first["steps"]) == 4 and int(first["videos"]) == 8  # 16 videos / global batch 4; all test videos
  for key in first:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)  # one model, replicated
  assert (tmp_path / "work" / "checkpoints" / "4").is_dir()


def test_optimizer_pieces():
  params = init_params(MODEL)
  scales = optim.layer_decay_scales(params, MODEL.depth, 0.5)
  assert float(scales["patch_embed"]["proj"]["kernel"]) == 0.125 and float(scales["head"]["kernel"]) == 1.0
  assert scales["blocks"]["mlp"]["fc1"]["kernel"].ravel().tolist() == [0.25, 0.5]
  mask = optim.decay_mask(params)
  assert mask["blocks"]["attn"]["qkv"]["kernel"] and mask["head"]["kernel"]
  assert not mask["blocks"]["attn"]["q_bias"] and not mask["fc_norm"]["scale"] and not mask["head"]["bias"]
  np.testing.assert_allclose(optim.soft_targets(np.array([1]), 4, 0.2), [[0.05, 0.85, 0.05, 0.05]], atol=1e-7)
  assert train.video_metrics(np.eye(3)[[0, 1, 1, 2]], np.array([0, 1, 2, 2]), 3) == pytest.approx(
      {"war": 75.0, "uar": 100 * (1 + 1 + 0.5) / 3, "top1": 75.0, "top5": 100.0, "videos": 4})


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("data")
  builders.build("synthetic_motion", data_dir, "tiny")
  return (input_pipeline.open_split(data_dir, "synthetic_motion", "train")[0],
          input_pipeline.open_split(data_dir, "synthetic_motion", "test")[0])


def _config(**train_overrides):
  train_config = dict(batch_size=4, epochs=3, seed=0, log_every=1, checkpoint_every=2, eval_every_epochs=3,
                      label_smoothing=0.1, mixup_alpha=0.0, cutmix_alpha=0.0, inject_nan_at_step=-1, dtype="float32")
  train_config.update(train_overrides)
  return ml_collections.ConfigDict(dict(train=train_config, optim=dict(
      lr=1e-3, warmup_steps=2, weight_decay=0.05, b1=0.9, b2=0.999, clip_norm=1.0, layer_decay=0.75, accumulate=1)))


def _fit(sources, workdir, **overrides):
  pipelines = input_pipeline.Pipelines(SPEC, SPEC, seed=0)
  return train.fit(model_config=MODEL, params=init_params(MODEL), train_source=sources[0], eval_source=sources[1],
                   num_classes=4, config=_config(**overrides), workdir=workdir, pipelines=pipelines)


def test_sigterm_saves_and_a_relaunch_reaches_the_uninterrupted_params(sources, tmp_path):
  reference = _fit(sources, tmp_path / "straight")
  assert reference["steps"] == 12 and set(reference["eval"]) >= {"war", "uar", "top1", "top5"}

  metrics = tmp_path / "killed" / "metrics.jsonl"

  def send_sigterm():
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=send_sigterm, daemon=True).start()
  with pytest.raises(train.Preempted, match="SIGTERM at step"):
    _fit(sources, tmp_path / "killed")
  saved = sorted(int(p.name) for p in (tmp_path / "killed" / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and 3 <= saved[-1] < 12
  resumed = _fit(sources, tmp_path / "killed")
  for a, b in zip(jax.tree.leaves(reference["params"]), jax.tree.leaves(resumed["params"])):
    np.testing.assert_array_equal(a, b)
  assert resumed["eval"]["war"] == reference["eval"]["war"]


def test_a_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(sources, tmp_path):
  with pytest.raises(train.NonFiniteLoss, match=r"loss is nan at step 6: stopping. The last good checkpoint \(step 4\)"):
    _fit(sources, tmp_path, inject_nan_at_step=5)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["4"]


def test_demo_config_at_toy_size_learns_well_above_chance(tmp_path):
  from configs import demo

  config = demo.get_config()
  config.data.update(config="small", data_dir=str(tmp_path / "data"), classes=["square_right", "square_left",
                                                                               "square_down", "square_up"],
                     image_size=64, num_frames=8, sampling_rate=2, num_clips=1, min_crop_area=0.6)
  config.model.update(width=48, depth=4, num_heads=4, mlp_dim=96)
  config.pretrain.classes = ["square_right", "square_left"]
  config.pretrain.train.update(epochs=8, batch_size=16)
  config.train.update(epochs=40, batch_size=16)
  config.optim.update(lr=2e-3, warmup_steps=10)
  summary = pipeline.run(config, tmp_path / "run")
  assert summary["kept_blocks"] and len(summary["removed_blocks"]) == 2
  assert summary["metrics"]["war"] >= 60, summary["metrics"]  # chance: 25 %
  assert (tmp_path / "run" / "report.md").is_file() and (tmp_path / "run" / "curves.png").is_file()


def _one_update(batches, accumulate: int, dtype="float32"):
  params = init_params(MODEL)
  optim_config = ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=0, weight_decay=0.05, b1=0.9, b2=0.999,
                                                clip_norm=0.0, layer_decay=1.0, accumulate=accumulate))
  tx, schedule = optim.make_optimizer(optim_config, params, MODEL.depth, 10)
  mesh = train.make_mesh()
  from gardener_jax.models import VideoMAE
  train_fn, _ = train.compile_steps(mesh, VideoMAE(MODEL, dtype=jax.numpy.dtype(dtype)), tx, schedule,
                                    train.TrainOptions(accumulate=accumulate), 4)
  state = train.init_state(params, tx)
  for batch in batches:
    state, metrics = train_fn(state, train.global_batch(mesh, batch), jax.random.key(0))
  return state, metrics


def _batch(n, seed):
  rng = np.random.default_rng(seed)
  return {"clips": rng.standard_normal((n, 4, 32, 32, 3)).astype(np.float32),
          "label": rng.integers(0, 4, n).astype(np.int32)}


def test_gradient_accumulation_equals_the_large_batch():
  whole = _batch(8, 0)
  halves = [{k: v[:4] for k, v in whole.items()}, {k: v[4:] for k, v in whole.items()}]
  big, _ = _one_update([whole], accumulate=1)
  accumulated, _ = _one_update(halves, accumulate=2)
  for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(accumulated.params)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  batch = _batch(4, 1)
  state, metrics = _one_update([batch], accumulate=1, dtype="bfloat16")
  _, reference = _one_update([batch], accumulate=1)
  assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {np.dtype("float32")}
  np.testing.assert_allclose(float(metrics["loss"]), float(reference["loss"]), rtol=2e-2)


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_and_cutmix_mix_clips_and_targets_alike(mixup, cutmix):
  clips = np.stack([np.full((4, 8, 8, 3), i, np.float32) for i in range(4)])
  targets = optim.soft_targets(np.arange(4), 4, 0.0)
  mixed, mixed_targets = optim.mix(jax.random.key(3), clips, targets, mixup, cutmix)
  np.testing.assert_allclose(np.asarray(mixed_targets).sum(axis=1), 1.0, atol=1e-6)
  # the share of each clip's pixels taken from its partner (reversed batch) is the partner's target weight
  partner_share = (np.asarray(mixed)[0] - 0.0) / 3.0
  np.testing.assert_allclose(partner_share.mean(), float(mixed_targets[0, 3]), atol=1e-5)
