"""A whole config checked before any work: each kind of mistake named by its field, all at once, exit
status 2, nothing written; the shipped configs pass; one `gardener` command for every job."""

import json
import os
import subprocess
import sys
import time

import pytest

from configs import (demo, pretrain_demo, pretrain_k400_vitb, pretrain_ucf101_vitb, sweep_demo, sweep_ucf101_vitb,
                     ucf101_vitb, ucf101_vitb_videomae)
from gardener_jax import validate
from gardener_jax.cli import main as gardener
from gardener_jax.models import ModelConfig
from tests import factories

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fields(problems) -> dict[str, str]:
  return {p.field: str(p) for p in problems}


def _demo(**overrides):
  config = demo.get_config()
  for field, value in overrides.items():
    section, name = field.rsplit(".", 1)
    node = config
    for key in section.split("."):
      node = node[key]
    node[name] = value
  return config


def test_the_shipped_configs_pass_but_for_what_a_user_must_give():
  assert validate.job_problems(demo.get_config()) == []
  assert validate.pretrain_problems(pretrain_demo.get_config()) == []
  assert validate.sweep_problems(sweep_demo.get_config()) == []
  for config in (ucf101_vitb.get_config(), sweep_ucf101_vitb.get_config(), ucf101_vitb_videomae.get_config()):
    problems = validate.sweep_problems(config) if "sweep" in config else validate.job_problems(config)
    assert sorted(_fields(problems)) == ["data.manual_dir", "init.source"]  # the checkpoint and the videos
  for config in (pretrain_k400_vitb.get_config(), pretrain_ucf101_vitb.get_config()):
    assert sorted(_fields(validate.pretrain_problems(config))) == ["data.manual_dir"]


def test_recipe_configs_scale_the_learning_rate_and_warm_up_with_the_batch():
  config = pretrain_k400_vitb.get_config()
  assert (config.optim.lr, config.optim.end_lr, config.optim.warmup_steps) == (
      1.5e-4 * 2048 / 256, 1e-5 * 2048 / 256, 40 * 240_000 // 2048)
  config.train.batch_size, config.optim.accumulate = 128, 2  # as `--config.train.batch_size=128` would
  assert (config.optim.lr, config.optim.end_lr, config.optim.warmup_steps) == (1.5e-4, 1e-5, 40 * 240_000 // 256)
  config.optim.lr = 1e-4  # a learning rate given outright stays as given
  config.train.batch_size = 64
  assert config.optim.lr == 1e-4 and config.optim.warmup_steps == 40 * 240_000 // 128


@pytest.mark.parametrize("overrides, field, says", [
    ({"prune.criterion": "bogus"}, "prune.criterion", "one of 'none', 'explicit', 'entropy'"),  # unknown name
    ({"data.name": "kinetics"}, "data.name", "one of 'synthetic_motion'"),
    ({"data.config": "huge"}, "data.config", "a config of synthetic_motion: one of 'default', 'small', 'tiny'"),
    ({"prune.discretize": "hist:1"}, "prune.discretize", "hist:K with K ≥ 2"),
    ({"train.dtype": "float8"}, "train.dtype", "float32 or bfloat16"),
    ({"train.dtype": "float16"}, "train.dtype", "float16 compute would need loss scaling"),
    ({"optim.end_lr": 0.5}, "optim.end_lr", "0.001"),  # the cosine ends above the peak
    ({"prune.ratio": 1.5}, "prune.ratio", "a number in (0, 1)"),  # out of range
    ({"train.batch_size": 0}, "train.batch_size", "an integer ≥ 1"),
    ({"optim.lr": 0.0}, "optim.lr", "a number in (0, inf]"),
    ({"pretrain.masked.mae.mask_ratio": 1.0}, "pretrain.masked.mae.mask_ratio", "a number in (0, 1)"),
    ({"prune.ratio": 0.0, "prune.remove": 6}, "prune.remove", "1 … 5 of the 6 blocks"),  # the model's depth
    ({"prune.ratio": 0.0, "prune.blocks": "2,7"}, "prune.blocks", "fewer than all of the 6 blocks"),
    ({"init.source": "/no/such/checkpoint"}, "init.source", "an existing file or directory"),  # missing file
    ({"prune.criterion": "oracle", "prune.oracle": "/no/oracle.json"}, "prune.oracle", "expected JSON"),
    ({"prune.remove": 2}, "prune.remove", "0 when prune.ratio (0.5) is set"),  # contradicting pairs
    ({"data.flip": True, "data.augment": False}, "data.flip", "set data.augment=True, or data.flip=False"),
    ({"data.val_split": "test"}, "data.val_fraction", "0 when data.val_split ('test') names the validation split"),
    ({"model.num_heads": 5}, "model.num_heads", "a divisor of model.width (96)"),
    ({"pretrain.classes": ("nope",)}, "pretrain.classes", "classes of synthetic_motion: square_right"),
    ({"data.classes": ("square_right", "nope")}, "data.classes", "('nope',): classes of synthetic_motion"),
    ({"train.compiler_options": {"xla_cpu_no_such_option": True}}, "train.compiler_options", "XLA compile options"),
])
def test_each_kind_of_mistake_names_its_field_and_what_is_allowed(overrides, field, says):
  problems = _fields(validate.job_problems(_demo(**overrides)))
  assert list(problems) == [field], problems
  assert says in problems[field]


def test_scaled_decode_must_be_true_or_false():  # a config built in Python; config files type-check it
  config = demo.get_config()
  del config.data["scaled_decode"]
  config.data.scaled_decode = "yes"
  problems = _fields(validate.job_problems(config))
  assert list(problems) == ["data.scaled_decode"] and "True or False" in problems["data.scaled_decode"]


def test_the_depth_comes_from_the_source_checkpoint_without_loading_it(tmp_path):
  ours = tmp_path / "ours"
  ours.mkdir()
  (ours / "config.json").write_text(ModelConfig(width=32, depth=4, num_heads=2, mlp_dim=64).to_json())
  factories.hf_config(depth=3).save_pretrained(tmp_path / "hf")
  for source, depth in ((ours, 4), (tmp_path / "hf", 3)):
    problems = _fields(validate.job_problems(_demo(**{"init.source": str(source), "prune.ratio": 0.0,
                                                      "prune.remove": depth})))
    assert list(problems) == ["prune.remove"] and f"1 … {depth - 1} of the {depth} blocks" in problems["prune.remove"]


def test_blocks_to_remove_are_blocks_a_pruned_source_still_holds(tmp_path):
  (tmp_path / "config.json").write_text(ModelConfig(width=32, depth=3, num_heads=2, mlp_dim=64, kept_blocks=(1, 2, 4),
                                                    original_depth=4).to_json())
  assert validate.job_problems(_demo(**{"init.source": str(tmp_path), "prune.blocks": "4"})) == []
  problems = _fields(validate.job_problems(_demo(**{"init.source": str(tmp_path), "prune.blocks": "3"})))
  assert list(problems) == ["prune.blocks"] and "fewer than all of the 3 blocks (1, 2, 4)" in problems["prune.blocks"]


def test_a_sweep_checks_its_levels_and_criteria():
  config = sweep_demo.get_config()
  with config.unlocked():
    config.sweep.criteria = ("entropy", "entorpy")
    config.sweep.levels = (1, 12)
    config.sweep.epochs = (1, 2)
  problems = _fields(validate.sweep_problems(config))
  assert sorted(problems) == ["sweep.criteria", "sweep.epochs", "sweep.levels"]
  assert "('entorpy',)" in problems["sweep.criteria"] and "each 1 … 11" in problems["sweep.levels"]
  with config.unlocked():
    config.sweep.criteria, config.sweep.levels, config.sweep.epochs = ("entropy", "l1", "entropy"), (3, 3), (1,) * 12
  problems = _fields(validate.sweep_problems(config))
  assert sorted(problems) == ["sweep.criteria", "sweep.levels"] and "each value once" in problems["sweep.levels"]


def _gardener(*args, env=None, timeout=60):
  return subprocess.run([sys.executable, "-m", "gardener_jax", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})


def test_three_mistakes_are_reported_at_once_with_status_2_and_nothing_written(tmp_path):
  workdir = tmp_path / "job"
  start = time.perf_counter()
  done = _gardener("train", "--config", "configs/demo.py", "--workdir", str(workdir),
                   "--config.prune.criterion=bogus", "--config.train.batch_size=0", "--config.init.source=/nope")
  assert time.perf_counter() - start < 30
  assert done.returncode == 2, done.stderr[-2000:]
  assert "3 problems in the config, nothing was run" in done.stderr and "Traceback" not in done.stderr
  for field in ("config.prune.criterion = 'bogus'", "config.train.batch_size = 0", "config.init.source = '/nope'"):
    assert field in done.stderr
  assert not workdir.exists()


def test_a_batch_must_split_evenly_over_the_devices(tmp_path):
  done = _gardener("sweep", "--config", "configs/sweep_demo.py", "--workdir", str(tmp_path / "sweep"),
                   "--config.train.batch_size=6", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert done.returncode == 2, done.stderr[-2000:]
  assert "config.train.batch_size = 6: a multiple of the 4 devices (1 processes)" in done.stderr
  assert not (tmp_path / "sweep").exists()


def test_one_command_for_every_job(tmp_path, capsys):
  done = _gardener("pretrain", "--config", "configs/demo.py", "--workdir", str(tmp_path / "w"))
  assert done.returncode == 1 and "use `gardener train`" in done.stderr and not (tmp_path / "w").exists()
  factories.hf_classifier().save_pretrained(tmp_path / "hf")
  assert gardener(["convert", str(tmp_path / "hf"), str(tmp_path / "flax")]) == 0
  assert json.loads((tmp_path / "flax" / "config.json").read_text())["depth"] == 3
  with pytest.raises(SystemExit):
    gardener(["--help"])
  listed = capsys.readouterr().out
  assert all(f"\n    {verb} " in listed for verb in ("rank", "prune", "data", "train", "pretrain", "sweep", "convert",
                                                        "compare-paper"))


def test_a_dry_run_shows_the_plan_and_writes_nothing(tmp_path):
  """ViT-B from a source checkpoint that is only its config.json (no weights, no videos read)."""
  source, manual = tmp_path / "videomae-base", tmp_path / "ucf101"
  transformers_config = factories.hf_config(width=768, depth=12, num_heads=12, mlp_dim=3072, num_classes=400,
                                            num_frames=16, image_size=224)
  transformers_config.save_pretrained(source)
  manual.mkdir()
  done = _gardener("train", "--config", "configs/ucf101_vitb.py", "--workdir", str(tmp_path / "job"), "--dry_run",
                   f"--config.init.source={source}", f"--config.data.manual_dir={manual}",
                   f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.scaled_decode=True")
  assert done.returncode == 0, done.stderr[-2000:]
  plan = done.stdout
  assert "depth 12, width 768, 12 heads, MLP 3072, 16 × 224² clips (1568 tokens)" in plan
  assert "180.3 GFLOPs per clip" in plan and "3 of 12 blocks by entropy (exact), data-free" in plan
  assert "the pruned model: depth 9" in plan and "global batch 64 (64 per device)" in plan
  assert "not prepared" in plan and "[to run] conversion" in plan
  assert not (tmp_path / "job").exists() and not (tmp_path / "data").exists()


def test_a_dry_run_counts_the_demo_job_steps(tmp_path):
  from gardener_jax import plan
  from gardener_jax.data import builders

  builders.build("synthetic_motion", tmp_path / "data", "tiny")
  config = demo.get_config()
  config.data.update(data_dir=str(tmp_path / "data"), config="tiny", classes=())
  text = plan.job(config, tmp_path / "job")
  # tiny: 16 training videos, 10 % held out for validation (2), batch 32 → one step per epoch, 16 epochs
  assert "finetune: 16 epochs, 16 steps (14 videos)" in text and "data: synthetic_motion/tiny" in text
  assert "train 16, test 8 videos" in text and not (tmp_path / "job").exists()
