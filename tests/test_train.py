"""The data-parallel loop on one process: device-count invariance, float32 master weights, the
non-finite guard, SIGTERM and resume, final metrics from the final params, and learning."""

import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gardener_jax import optim, pipeline, train
from gardener_jax.checkpoint import cast_floats, load_checkpoint, load_tree
from gardener_jax.data import builders, input_pipeline, sources
from gardener_jax.evaluate import classification_evaluator, video_metrics
from gardener_jax.models import VideoMAE, init_params
from gardener_jax.sharding import global_batch, make_mesh
from tests import factories
from tests.train_setup import MODEL, SPEC, fit_config, splits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_the_schedule_warms_up_then_ends_at_end_lr():
  config = ml_collections.ConfigDict(dict(lr=1e-3, end_lr=1e-5, warmup_steps=10, weight_decay=0.0, b1=0.9, b2=0.999,
                                          clip_norm=0.0, layer_decay=1.0, accumulate=1))
  _, schedule = optim.make_optimizer(config, init_params(MODEL), MODEL.depth, 100)
  assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(1e-3)
  assert float(schedule(100)) == pytest.approx(1e-5) and float(schedule(55)) == pytest.approx((1e-3 + 1e-5) / 2)


def test_optimizer_pieces():
  params = init_params(MODEL)
  scales = optim.layer_decay_scales(params, MODEL.depth, 0.5)
  assert float(scales["patch_embed"]["proj"]["kernel"]) == 0.125 and float(scales["head"]["kernel"]) == 1.0
  assert scales["blocks"]["mlp"]["fc1"]["kernel"].ravel().tolist() == [0.25, 0.5]
  mask = optim.decay_mask(params)
  assert mask["blocks"]["attn"]["qkv"]["kernel"] and mask["head"]["kernel"]
  assert not mask["blocks"]["attn"]["q_bias"] and not mask["fc_norm"]["scale"] and not mask["head"]["bias"]
  np.testing.assert_allclose(optim.soft_targets(np.array([1]), 4, 0.2), [[0.05, 0.85, 0.05, 0.05]], atol=1e-7)
  assert video_metrics(np.eye(3)[[0, 1, 1, 2]], np.array([0, 1, 2, 2]), 3) == pytest.approx(
      {"war": 75.0, "uar": 100 * (1 + 1 + 0.5) / 3, "top1": 75.0, "top5": 100.0, "videos": 4})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  builders.build("synthetic_motion", path, "tiny")
  return path


def _fit(data_dir, workdir, params=None, val=None, pipelines=None, **overrides):
  return train.fit_classifier(model_config=MODEL, params=init_params(MODEL) if params is None else params,
                              splits=splits(data_dir, val), config=fit_config(**overrides), seed=0, workdir=workdir,
                              pipelines=pipelines or input_pipeline.Pipelines(SPEC, SPEC, seed=0))


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_sigterm_saves_and_a_relaunch_reaches_the_uninterrupted_params(data_dir, tmp_path):
  reference = _fit(data_dir, tmp_path / "straight")
  assert reference["steps"] == 12 and set(reference["test"]) >= {"war", "uar", "top1", "top5", "skipped"}

  metrics = tmp_path / "killed" / "metrics.jsonl"

  def send_sigterm():
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
      time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=send_sigterm, daemon=True).start()
  with pytest.raises(train.Preempted, match=r"SIGTERM: every process saved step (\d+)") as stopped:
    _fit(data_dir, tmp_path / "killed")
  saved = sorted(int(p.name) for p in (tmp_path / "killed" / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and 3 <= saved[-1] < 12 and f"saved step {saved[-1]} " in str(stopped.value)
  resumed = _fit(data_dir, tmp_path / "killed")
  _assert_same_params(reference["params"], resumed["params"])
  assert resumed["test"]["war"] == reference["test"]["war"]
  steps = [r["step"] for r in resumed["history"] if "loss" in r]
  assert steps == list(range(1, 13))  # the log reads as one run: no step twice

  finished = _fit(data_dir, tmp_path / "killed")  # a relaunch of a finished run only evaluates again
  _assert_same_params(reference["params"], finished["params"])
  lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 13 and sum('"test_war"' in line for line in lines) == 1


def test_a_stop_on_an_evaluation_step_is_evaluated_after_the_relaunch(data_dir, tmp_path, monkeypatch):
  """The stop vote lands on epoch 1's last step (4), which is saved before it would be evaluated: the relaunch
  evaluates it, so the validation records and `best/` are an uninterrupted run's."""
  val = sources.open_split(data_dir, "synthetic_motion", "test")[0]
  reference = _fit(data_dir, tmp_path / "straight", val=val)

  class StopOnTheFourthStep:  # the SIGTERM handler, as if the signal came during step 4
    votes = 0

    def __call__(self, signum, frame):
      pass

    @property
    def raised(self):
      StopOnTheFourthStep.votes += 1
      return StopOnTheFourthStep.votes == 4

  with monkeypatch.context() as patch:
    patch.setattr(train, "_SigtermFlag", StopOnTheFourthStep)
    with pytest.raises(train.Preempted, match="saved step 4 "):
      _fit(data_dir, tmp_path / "stopped", val=val)
  resumed = _fit(data_dir, tmp_path / "stopped", val=val)

  def validations(run):
    return [(r["step"], r["val_war"]) for r in run["history"] if "val_war" in r]

  assert [step for step, _ in validations(reference)] == [4, 8, 12]
  assert validations(resumed) == validations(reference) and resumed["best_step"] == reference["best_step"]
  assert sorted(p.name for p in (tmp_path / "stopped" / "best").iterdir()) == [str(reference["best_step"])]
  _assert_same_params(reference["params"], resumed["params"])


def test_more_processes_than_training_videos_is_an_error(data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 17)  # one process would have no videos, and its stream would end
  with pytest.raises(ValueError, match="16 training videos for 17 processes"):
    _fit(data_dir, tmp_path / "run")


def test_per_block_training_resumes_in_its_layout_and_returns_stacked_params(data_dir, tmp_path):
  per_block = _fit(data_dir, tmp_path / "per_block", scan_blocks=False)
  assert per_block["params"]["blocks"]["attn"]["qkv"]["kernel"].shape == (2, 32, 96)  # stacked again
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore((tmp_path / "per_block" / "checkpoints" / "12" / "state").absolute())
  assert sorted(state["params"]["blocks"]) == ["0", "1"]
  relaunched = _fit(data_dir, tmp_path / "per_block", scan_blocks=False)  # restores that layout, evaluates again
  _assert_same_params(per_block["params"], relaunched["params"])
  scanned = _fit(data_dir, tmp_path / "scanned")
  for ours, reference in zip(jax.tree.leaves(per_block["params"]), jax.tree.leaves(scanned["params"]), strict=True):
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_the_step_is_compiled_alone_and_what_ran_before_is_forgotten():
  earlier = jax.jit(lambda x: x * 2)  # stands for parameter init and layout conversions
  earlier(1.0)
  assert earlier._cache_size() == 1
  step = train.compile_alone(jax.jit(lambda x: x + 1), jnp.float32(1.0))
  assert earlier._cache_size() == 0
  assert float(step(jnp.float32(2.0))) == 3.0
  with pytest.raises(TypeError, match="differ from the types for which this computation was compiled"):
    step(jnp.zeros(3))  # compiled for the first call's shapes only, as the loop's calls all are


def test_compiler_options_reach_the_step_and_leave_its_result_alone(data_dir, tmp_path):
  reference = _fit(data_dir, tmp_path / "default", epochs=1)
  memory_ordered = _fit(data_dir, tmp_path / "memory", epochs=1,
                        compiler_options={"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"})
  _assert_same_params(reference["params"], memory_ordered["params"])  # another order of the same work
  with pytest.raises(jax.errors.JaxRuntimeError, match="xla_cpu_no_such_option"):  # they do reach XLA
    _fit(data_dir, tmp_path / "bogus", epochs=1, compiler_options={"xla_cpu_no_such_option": True})


# --- the non-finite guard ---------------------------------------------------------------------------

@jax.custom_vjp
def _poison_gradients(params, flag):
  return params


def _poison_forward(params, flag):
  return params, flag


def _poison_backward(flag, grads):
  return jax.tree.map(lambda g: g * jnp.where(flag, jnp.nan, 1.0).astype(g.dtype), grads), None


_poison_gradients.defvjp(_poison_forward, _poison_backward)


def _poisoned(loss_fn):
  """`loss_fn` whose gradients (not its loss) are NaN for a batch whose `poison` flags are set."""
  def poisoned(params, batch, rng):
    flag = jnp.any(batch["poison"])
    return loss_fn(_poison_gradients(params, flag), batch, rng)
  return poisoned


def test_a_step_with_non_finite_gradients_is_not_applied():
  params = init_params(MODEL)
  optim_config = ml_collections.ConfigDict(fit_config().optim)
  tx, schedule = optim.make_optimizer(optim_config, params, MODEL.depth, 10)
  mesh = make_mesh()
  loss_fn = train.classification_loss(VideoMAE(MODEL), 4, train.TrainOptions())
  step = train.compile_train_step(mesh, _poisoned(loss_fn), tx, schedule)
  state = train.init_state(params, tx)
  batch = {**_batch(4, seed=0), "poison": np.array([False, True, False, False])}
  votes = global_batch(mesh, {"v": np.zeros(jax.local_device_count(), np.int32)})["v"]
  after, metrics = step(jax.tree.map(jnp.array, state), global_batch(mesh, batch), jax.random.key(0), votes)
  assert np.isfinite(float(metrics["loss"])) and not np.isfinite(float(metrics["grad_norm"]))
  assert not bool(metrics["finite"]) and int(after.step) == 0
  _assert_same_params(after.params, state.params)
  _assert_same_params(after.opt_state, state.opt_state)


class _MarkingPipelines(input_pipeline.Pipelines):
  """Training batches as usual, with `poison` flags set in batch `at` (1-based) only."""

  def __init__(self, at: int):
    super().__init__(SPEC, SPEC, seed=0)
    object.__setattr__(self, "at", at)

  def train(self, source, batch_size):
    pipe = super().train(source, batch_size)
    count = itertools.count(1)

    def mark(batch):
      return {**batch, "poison": np.full(len(batch["label"]), next(count) == self.at)}
    return dataclasses.replace(pipe, dataset=pipe.dataset.map(mark))


def test_non_finite_gradients_stop_the_run_and_nothing_non_finite_is_saved(data_dir, tmp_path, monkeypatch):
  original = train.classification_loss
  monkeypatch.setattr(train, "classification_loss", lambda *a, **k: _poisoned(original(*a, **k)))
  with pytest.raises(train.NonFiniteStep, match=r"step 5: loss [0-9.]+, gradient norm nan; the update was not "
                                                r"applied .* last finite checkpoint \(step 4\)"):
    _fit(data_dir, tmp_path, pipelines=_MarkingPipelines(at=5))
  saved = sorted(p for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert [p.name for p in saved] == ["4"]
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore((saved[-1] / "state").absolute())
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


# --- float32 master weights --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoints_train_in_float32(data_dir, tmp_path, dtype):
  import torch

  from tools.convert_torch import convert

  hf = factories.hf_classifier(seed=1, width=32, depth=2, num_heads=4, mlp_dim=64, num_classes=4, num_frames=4,
                               image_size=32)
  hf.to(getattr(torch, dtype)).save_pretrained(tmp_path / "hf")
  convert(tmp_path / "hf", tmp_path / "converted")
  _, stored, config = load_checkpoint(tmp_path / "converted")
  assert {leaf.dtype for leaf in jax.tree.leaves(stored)} == {jnp.dtype(dtype)}
  assert config == MODEL.replace(head_norm_eps=1e-5, norm_eps=1e-12)

  model_config = config  # the demo recipe's learning rate, which diverged when params stayed in half precision
  result = train.fit_classifier(model_config=model_config, params=stored, splits=splits(data_dir),
                                config=fit_config(), seed=0, workdir=tmp_path / "half",
                                pipelines=input_pipeline.Pipelines(SPEC, SPEC, seed=0))
  losses = [r["loss"] for r in result["history"] if "loss" in r]
  assert len(losses) == 12 and np.all(np.isfinite(losses))
  assert {leaf.dtype for leaf in jax.tree.leaves(result["params"])} == {np.dtype("float32")}
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore((tmp_path / "half" / "checkpoints" / "12" / "state").absolute())
  assert {leaf.dtype for leaf in jax.tree.leaves(state["opt_state"]) if leaf.ndim} == {np.dtype("float32")}

  upcast = jax.tree.map(lambda x: np.asarray(x, np.float32), stored)
  by_hand = train.fit_classifier(model_config=model_config, params=upcast, splits=splits(data_dir),
                                 config=fit_config(), seed=0, workdir=tmp_path / "upcast",
                                 pipelines=input_pipeline.Pipelines(SPEC, SPEC, seed=0))
  _assert_same_params(result["params"], by_hand["params"])


# --- the whole job: validation chooses best/, the final params give the reported metrics ------------

def test_demo_config_at_toy_size_learns_and_reports_the_final_params(tmp_path):
  from configs import demo

  config = demo.get_config()
  config.data.update(config="small", data_dir=str(tmp_path / "data"), classes=["square_right", "square_left",
                                                                               "square_down", "square_up"],
                     image_size=64, num_frames=8, sampling_rate=2, num_clips=1, min_crop_area=0.6, val_fraction=0.125)
  config.model.update(width=48, depth=4, num_heads=4, mlp_dim=96)
  config.pretrain.classes = ["square_right", "square_left"]
  config.pretrain.masked.mae.decoder.update(width=32, depth=1, num_heads=2, mlp_dim=64)
  config.pretrain.masked.train.update(epochs=6, batch_size=16)
  config.pretrain.train.update(epochs=8, batch_size=16)
  config.train.update(epochs=60, batch_size=16, eval_every_epochs=7)  # 60 epochs: the cadence does not divide it
  config.optim.update(lr=2e-3, warmup_steps=10)
  summary = pipeline.run(config, tmp_path / "run")
  # The source model as the paper's: masked pretraining, supervised on the source classes, float16, exact entropy.
  source = summary["source"]
  assert source["classes"] == ["square_right", "square_left"] and source["saved_dtype"] == "float16"
  steps_per_epoch = 56 // 16  # 64 videos of the 2 classes, 8 held out
  assert source["masked_pretraining"]["steps"] == 6 * steps_per_epoch
  assert source["supervised"]["steps"] == 8 * steps_per_epoch
  assert source["masked_pretraining"]["validation"]["final"]["loss"] < 1.1
  stored = load_tree(tmp_path / "run" / "pretrained")["params"]
  assert {leaf.dtype for leaf in jax.tree.leaves(stored)} == {np.dtype("float16")} and "decoder" not in stored
  ranking = summary["pruning"]["ranking"]
  assert ranking["discretize"] == "exact" and summary["removed_blocks"] == sorted(ranking["removal_order"][:2])
  assert all(score < 0.95 * np.log(4 * 48 * 48 * 3 + 2 * 48 * 96) for score in ranking["scores"])  # a float16 grid
  text = (tmp_path / "run" / "report.md").read_text()
  assert "## Source model" in text and "## Pruning" in text and "(exact)" in text
  assert (tmp_path / "run" / "masked_pretraining" / "reconstructions.png").is_file()
  assert summary["kept_blocks"] and summary["removed_blocks"] == sorted(set(range(1, 5)) - set(summary["kept_blocks"]))
  assert summary["original_depth"] == 4 and len(summary["removed_blocks"]) == 2
  assert summary["metrics"]["split"] == "test" and summary["metrics"]["war"] >= 50, summary["metrics"]  # chance 25 %
  assert summary["validation"]["source"] == "16 videos (12.5%) held out of split 'train'"
  assert summary["validation"]["best_step"] is not None and summary["skipped_eval_videos"] == {"val": 0, "test": 0}

  model, params, final_config = load_checkpoint(tmp_path / "run" / "final")
  test = sources.from_config(config.data, list(config.data.classes), config.seed).test
  pipelines = input_pipeline.pipelines_from_config(config.data, config.seed)
  evaluator = classification_evaluator(make_mesh(), model, test, pipelines, 4, "test")
  metrics = evaluator(params)
  assert {k: metrics[k] for k in ("war", "uar", "top1", "top5", "videos")} == {
      k: summary["metrics"][k] for k in ("war", "uar", "top1", "top5", "videos")}
  assert (tmp_path / "run" / "report.md").is_file() and (tmp_path / "run" / "curves.png").is_file()


def test_save_dtype_writes_the_source_dtype_only_when_asked():
  params = {"blocks": {"w": np.ones((2, 3), np.float16)}, "head": {"w": np.ones(3, np.float32)}}
  assert pipeline.save_dtype("", params) == jnp.float32 and pipeline.save_dtype("source", params) == jnp.float16
  with pytest.raises(ValueError, match="train.save_dtype 'half'"):
    pipeline.save_dtype("half", params)
  cast = cast_floats({"a": np.ones(2, np.float32), "n": np.arange(2)}, jnp.bfloat16)
  assert cast["a"].dtype == jnp.bfloat16 and cast["n"].dtype == np.arange(2).dtype


def _one_update(batches, accumulate: int, dtype="float32"):
  params = init_params(MODEL)
  optim_config = ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=0, weight_decay=0.05, b1=0.9, b2=0.999,
                                                clip_norm=0.0, layer_decay=1.0, accumulate=accumulate))
  tx, schedule = optim.make_optimizer(optim_config, params, MODEL.depth, 10)
  mesh = make_mesh()
  loss_fn = train.classification_loss(VideoMAE(MODEL, dtype=jnp.dtype(dtype)), 4, train.TrainOptions())
  step = train.compile_train_step(mesh, loss_fn, tx, schedule, accumulate)
  state = train.init_state(params, tx)
  votes = global_batch(mesh, {"v": np.zeros(jax.local_device_count(), np.int32)})["v"]
  for batch in batches:
    state, metrics = step(state, global_batch(mesh, batch), jax.random.key(0), votes)
  return state, metrics


def _batch(n, seed):
  rng = np.random.default_rng(seed)
  return {"clips": rng.integers(0, 256, (n, 4, 32, 32, 3), np.uint8),
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


def test_mixup_partners_come_from_the_whole_batch_on_several_devices():
  """Device i's clips meet those of device n − 1 − i, reversed: the whole batch reversed, as on one device."""
  code = ("import jax, numpy as np\n"
          "from jax.sharding import PartitionSpec as P\n"
          "from gardener_jax.sharding import AXIS, global_batch, make_mesh\n"
          "from gardener_jax.train import batch_reversed\n"
          "mesh = make_mesh()\n"
          "f = jax.jit(jax.shard_map(batch_reversed, mesh=mesh, in_specs=P(AXIS), out_specs=P(AXIS)))\n"
          "print(jax.device_count(), np.asarray(f(global_batch(mesh, {'x': np.arange(8)})['x'])).tolist())")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.split(maxsplit=1) == ["4", "[7, 6, 5, 4, 3, 2, 1, 0]\n"]


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_and_cutmix_mix_clips_and_targets_alike(mixup, cutmix):
  clips = np.stack([np.full((4, 8, 8, 3), i, np.float32) for i in range(4)])
  targets = optim.soft_targets(np.arange(4), 4, 0.0)
  mixed, mixed_targets = optim.mix(jax.random.key(3), clips, targets, mixup, cutmix)
  np.testing.assert_allclose(np.asarray(mixed_targets).sum(axis=1), 1.0, atol=1e-6)
  # the share of each clip's pixels taken from its partner (reversed batch) is the partner's target weight
  partner_share = (np.asarray(mixed)[0] - 0.0) / 3.0
  np.testing.assert_allclose(partner_share.mean(), float(mixed_targets[0, 3]), atol=1e-5)
