"""tools.parity: the training loop's JAX step follows the same finetune written in PyTorch (transformers
VideoMAE + AdamW), step by step, pruned or not, with gradient accumulation; the command's output and errors."""

import json

import jax
import numpy as np
import pytest
from absl import app

from gardener_jax import optim
from gardener_jax.checkpoint import load_tree, read_config
from gardener_jax.data import builders
from gardener_jax.models import init_params
from tests import factories
from tests.train_setup import CLASSES, MODEL, fit_config
from tools import parity
from tools.convert_torch import convert

STEPS, BATCH = 20, 4
LOSS_RTOL, PARAM_RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A tiny random transformers VideoMAE (width 32, 6 blocks, 4 heads, 4 frames of 32², 4 classes), converted."""
  path = tmp_path_factory.mktemp("parity")
  factories.hf_classifier(depth=6, num_classes=len(CLASSES)).save_pretrained(path / "hf")
  convert(path / "hf", path / "flax")
  return path / "flax"


def _recipe(**optim_overrides):
  """lr 1e-3 with 5 warm-up steps then cosine, weight decay 0.05, layer decay 0.75, label smoothing 0.1,
  clip_norm 1.0; float32."""
  config = fit_config()
  config.optim.update({"warmup_steps": 5, **optim_overrides})
  return config


def _compare(checkpoint, blocks=(), steps=STEPS, **optim_overrides):
  config, _ = parity.comparable_config(_recipe(**optim_overrides))
  params, model_config = parity.finetuned_model(load_tree(checkpoint)["params"], read_config(checkpoint), blocks,
                                                CLASSES, config)
  model_config, _ = parity.comparable_model(model_config)
  batches = parity.random_batches(model_config, BATCH, steps, seed=0)
  return parity.compare(parity.Task(params, model_config, batches, config))


def _assert_same_trajectory(result):
  records, summary = result["records"], result["summary"]
  np.testing.assert_allclose([r["loss_jax"] for r in records], [r["loss_torch"] for r in records], rtol=LOSS_RTOL)
  # optax's schedule is float32, ours float64: equal to 1e-6 of the peak lr.
  np.testing.assert_allclose([r["lr_jax"] for r in records], [r["lr_torch"] for r in records], rtol=0, atol=1e-9)
  assert summary["max_rel_param_diff"] < PARAM_RTOL, summary["max_rel_param_diff_tensor"]


@pytest.mark.parametrize("blocks", [(), (2, 5)], ids=["unpruned", "without_blocks_2_5"])
def test_the_jax_loop_follows_pytorch(checkpoint, blocks):
  result = _compare(checkpoint, blocks)
  records, summary = result["records"], result["summary"]
  assert len(records) == STEPS and summary["kept_blocks"] == [b for b in range(1, 7) if b not in blocks]
  _assert_same_trajectory(result)
  # What would make a wrong PyTorch recipe show: clipping acts, and the lr warms up from 0 and decays.
  assert max(r["grad_norm_jax"] for r in records) > 1.0
  lrs = [r["lr_torch"] for r in records]
  assert lrs[0] == 0 and lrs[5] == pytest.approx(1e-3) and lrs[1] < lrs[5] and 0 < lrs[-1] < lrs[10] < lrs[5]


def test_accumulated_gradients_follow_pytorch(checkpoint):
  result = _compare(checkpoint, steps=12, accumulate=3)
  _assert_same_trajectory(result)
  lrs = [r["lr_torch"] for r in result["records"]]
  assert result["summary"]["updates"] == 4 and lrs[:3] == [0.0] * 3 and len(set(lrs)) == 4


def test_pytorch_schedule_is_the_recipes():
  params = init_params(MODEL)
  for num_updates, warmup_steps in [(20, 5), (4, 10), (1, 3), (7, 0)]:
    config = _recipe(warmup_steps=warmup_steps)
    _, schedule = optim.make_optimizer(config.optim, params, MODEL.depth, num_updates)
    ours = parity.recipe_schedule(config.optim, num_updates)
    updates = np.arange(num_updates + 2)
    np.testing.assert_allclose([ours(u) for u in updates], np.asarray(jax.vmap(schedule)(updates)), rtol=0, atol=1e-9,
                               err_msg=f"{num_updates} updates, {warmup_steps} warm-up steps")


def test_layers_of_hf_parameter_names():
  assert parity.hf_layer("videomae.embeddings.patch_embeddings.projection.weight", 4) == 0
  assert parity.hf_layer("videomae.encoder.layer.0.attention.attention.query.bias", 4) == 1
  assert parity.hf_layer("videomae.encoder.layer.3.output.dense.weight", 4) == 4
  assert [parity.hf_layer(n, 4) for n in ("fc_norm.weight", "videomae.layernorm.bias", "classifier.weight")] == [5] * 3


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  builders.build("synthetic_motion", path, "tiny")
  return path


def _command(checkpoint, *flags):
  return ["parity", "--config", "configs/demo.py", "--checkpoint", str(checkpoint), *flags]


def test_command_prints_the_table_and_writes_json(checkpoint, data_dir, tmp_path, capsys):
  out = tmp_path / "parity.json"
  parity.main(_command(checkpoint, "--inputs", "data", "--steps", "6", "--batch_size", "4", "--blocks", "3",
                       "--json", str(out), f"--config.data.data_dir={data_dir}", "--config.data.config=tiny",
                       "--config.data.num_frames=4", "--config.data.image_size=32",
                       f"--config.data.classes={tuple(CLASSES)}", "--config.optim.layer_decay=0.75",
                       "--config.model.drop_path_rate=0.1", "--config.train.mixup_alpha=0.8"))
  printed = capsys.readouterr().out
  assert "| step | lr jax | lr torch | loss jax | loss torch | rel. diff |" in printed
  assert "model.drop_path_rate = 0.0 (was 0.1)" in printed and "train.mixup_alpha = 0.0 (was 0.8)" in printed
  written = json.loads(out.read_text())
  records, summary = written["records"], written["summary"]
  assert [r["step"] for r in records] == list(range(1, 7))
  assert summary["inputs"] == "data" and summary["kept_blocks"] == [1, 2, 4, 5, 6] and summary["num_classes"] == 4
  assert summary["max_rel_loss_diff"] < LOSS_RTOL and summary["max_rel_param_diff"] < PARAM_RTOL
  assert set(summary["seconds"]) == {"jax", "torch"} and summary["devices"]["cpu"]
  assert "train.dtype = float32" in summary["forced"]


@pytest.mark.parametrize("flags, message", [
    (["--blocks", "7"], r"--blocks: blocks \[7\] are not in this model"),
    (["--blocks", "two"], "expected 1-based block numbers"),
    (["--inputs", "data", "--config.data.num_frames=8"], r"the data gives clips of \(8, 32, 32, 3\)"),
])
def test_bad_input_is_a_usage_error(checkpoint, data_dir, flags, message):
  data = [f"--config.data.data_dir={data_dir}", "--config.data.config=tiny", "--config.data.image_size=32",
          f"--config.data.classes={tuple(CLASSES)}", "--inputs", "random", "--steps", "2"]
  with pytest.raises(app.UsageError, match=message) as error:
    parity.main(_command(checkpoint, *data, *flags))
  assert error.value.exitcode == 2


def test_a_config_that_would_pretrain_needs_a_checkpoint():
  with pytest.raises(app.UsageError, match="init.source 'pretrain' would train the source model first"):
    parity.main(["parity", "--config", "configs/demo.py", "--inputs", "random"])
