"""A whole job, pretraining or sweep config checked before any work: every problem at once, each naming
its field, the value and what is allowed, so that a typo costs a second instead of a pretraining run.

  problems = validate.job_problems(config)        # [] when the config is sound
  validate.check(config, "job")                   # raises ConfigError listing them all

Checked: names (datasets and their configs, criteria, discretisations, dtypes), ranges (ratios, counts,
learning-rate settings, blocks and levels against the model's depth: from the model config, or read
from the source checkpoint's config.json without loading its weights), files that must exist (the
init source, `manual_dir` when a real dataset must still be built, the oracle file), contradicting
pairs (`ratio` and `remove`, `flip` without `augment`, `val_split` and `val_fraction`), and batch sizes
against the devices.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Any, Callable

_MISSING = object()
DTYPES = ("float32", "bfloat16")  # float16 compute would need loss scaling: its small gradients round to zero
SAVE_DTYPES = ("", "float32", "float16", "bfloat16", "source")


@dataclasses.dataclass(frozen=True)
class Problem:
  field: str  # e.g. 'prune.criterion'
  value: Any
  expected: str

  def __str__(self) -> str:
    value = "missing" if self.value is _MISSING else repr(self.value)
    return f"config.{self.field} = {value}: {self.expected}"


class ConfigError(ValueError):
  """A user's config mistakes (not the project's own errors): reported without a traceback, exit status 2."""

  def __init__(self, problems: list[Problem]):
    self.problems = problems
    super().__init__(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the config, nothing was run:\n"
                     + "\n".join(f"  {p}" for p in problems))


def _integer(minimum: int) -> Callable[[Any], bool]:
  return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
  def ok(v):
    if not isinstance(v, (int, float)) or isinstance(v, bool):
      return False
    return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
  return ok


def _interval(low, high, low_open=False, high_open=False) -> str:
  return f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _compiles_with(options) -> bool:
  """Whether XLA compiles a trivial function with `options` (a mapping): a misspelt name fails there."""
  import jax

  if not hasattr(options, "items"):
    return False
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options.items())).lower(0.0).compile()
  except Exception:  # noqa: BLE001 — XLA's error types vary by backend; the problem names the field
    return False
  return True


class _Checker:
  def __init__(self, config):
    self.config, self.problems = config, []

  def get(self, field: str, default=_MISSING):
    node = self.config
    for key in field.split("."):
      if node is None or not hasattr(node, "get") or key not in node:
        return default
      node = node[key]
    return node

  def add(self, field: str, value, expected: str) -> None:
    self.problems.append(Problem(field, value, expected))

  def require(self, field: str, ok: Callable[[Any], bool], expected: str, *, optional: bool = False) -> bool:
    value = self.get(field)
    if value is _MISSING:
      if not optional:
        self.add(field, value, expected)
      return False
    if not ok(value):
      self.add(field, value, expected)
      return False
    return True

  def one_of(self, field: str, allowed, *, optional: bool = False) -> bool:
    return self.require(field, lambda v: v in allowed, f"one of {', '.join(map(repr, allowed))}", optional=optional)

  def at_least(self, field: str, minimum: int, *, optional: bool = False) -> bool:
    return self.require(field, _integer(minimum), f"an integer ≥ {minimum}", optional=optional)

  def within(self, field: str, low, high, *, optional: bool = False, **openness) -> bool:
    return self.require(field, _number(low, high, **openness), _interval(low, high, **openness), optional=optional)


def _check_data(c: _Checker, depth_hint=None) -> None:
  from gardener_jax.data import builders, sources

  if c.one_of("data.name", list(builders.BUILDERS)):
    name, config = c.get("data.name"), c.get("data.config", "") or None
    data_dir = pathlib.Path(c.get("data.data_dir", "") or "data")
    cls = builders.BUILDERS[name]
    known = ([b.name for b in cls.BUILDER_CONFIGS] if name == "synthetic_motion"
             else list(getattr(cls, "CONFIG_NAMES", ())))
    if config and known and config not in known:
      c.add("data.config", config, f"a config of {name}: one of {', '.join(map(repr, known))}")
    elif name != "synthetic_motion":
      manual = c.get("data.manual_dir", "")
      if not sources.prepared(data_dir, name, config) and not (manual and pathlib.Path(manual).expanduser().is_dir()):
        c.add("data.manual_dir", manual, f"{name} is not prepared in {data_dir}: an existing directory with the "
              "extracted videos and split lists, to build it from")
    if known_classes := dataset_classes(name, config, data_dir):
      for field in ("data.classes", "pretrain.classes"):
        if unknown := [n for n in c.get(field, None) or () if n not in known_classes]:
          c.add(field, tuple(unknown), f"classes of {name}: {', '.join(known_classes)}")
  for field in ("num_frames", "sampling_rate", "image_size", "num_clips", "eval_batch_size"):
    c.at_least(f"data.{field}", 1)
  c.one_of("data.num_crops", (1, 3))
  c.at_least("data.workers", 0, optional=True)
  c.within("data.val_fraction", 0, 1, high_open=True, optional=True)
  c.within("data.min_crop_area", 0, 1, low_open=True, optional=True)
  c.require("data.scaled_decode", lambda v: isinstance(v, bool), "True or False", optional=True)
  if c.get("data.flip", False) is True and c.get("data.augment", True) is False:
    c.add("data.flip", True, "flips are part of training augmentation: set data.augment=True, or data.flip=False")
  if c.get("data.val_split", "") and c.get("data.val_fraction", 0):
    c.add("data.val_fraction", c.get("data.val_fraction"),
          f"0 when data.val_split ({c.get('data.val_split')!r}) names the validation split: give one of the two")


def dataset_classes(name: str, config: str | None, data_dir: pathlib.Path) -> list[str] | None:
  """The class names of a dataset: from its prepared version (label.labels.txt), or for the synthetic set
  from its builder config; None when only building it will tell."""
  from gardener_jax.data import builders, sources

  if (found := sources.prepared(data_dir, name, config)) and (found[-1] / "label.labels.txt").is_file():
    return [line.strip() for line in (found[-1] / "label.labels.txt").read_text().splitlines() if line.strip()]
  if name == "synthetic_motion":
    return next((list(b.classes) for b in builders.BUILDERS[name].BUILDER_CONFIGS if b.name == (config or "default")),
                None)
  return None


def _check_training(c: _Checker, prefix: str = "") -> None:
  """`{prefix}train` and `{prefix}optim` of a training stage."""
  import jax

  t, o = f"{prefix}train", f"{prefix}optim"
  for field in ("epochs", "log_every", "checkpoint_every", "eval_every_epochs"):
    c.at_least(f"{t}.{field}", 1, optional=field != "epochs")
  if c.at_least(f"{t}.batch_size", 1):
    batch, devices = c.get(f"{t}.batch_size"), jax.device_count()
    if batch % devices:
      c.add(f"{t}.batch_size", batch, f"a multiple of the {devices} devices ({jax.process_count()} processes), "
            "each takes an equal share")
  c.require(f"{t}.dtype", lambda v: v in DTYPES, "float32 or bfloat16 (float16 compute would need loss scaling, "
            "which this loop does not do: its small gradients round to zero)", optional=True)
  c.one_of(f"{t}.save_dtype", SAVE_DTYPES, optional=True)
  c.require(f"{t}.scan_blocks", lambda v: isinstance(v, bool), "True or False", optional=True)
  c.require(f"{t}.compiler_options", _compiles_with, "XLA compile options this backend accepts, as a dict of "
            "option name to value (`jax.jit(compiler_options=...)`)", optional=True)
  c.within(f"{t}.label_smoothing", 0, 1, high_open=True, optional=True)
  for field in ("mixup_alpha", "cutmix_alpha"):
    c.within(f"{t}.{field}", 0, float("inf"), optional=True)
  c.within(f"{o}.lr", 0, float("inf"), low_open=True)
  c.at_least(f"{o}.warmup_steps", 0, optional=True)
  lr = c.get(f"{o}.lr", None)
  c.within(f"{o}.end_lr", 0, lr if _number(0, float("inf"))(lr) else float("inf"), optional=True)
  c.within(f"{o}.weight_decay", 0, float("inf"), optional=True)
  for field in ("b1", "b2"):
    c.within(f"{o}.{field}", 0, 1, high_open=True, optional=True)
  c.within(f"{o}.clip_norm", 0, float("inf"), optional=True)
  c.within(f"{o}.layer_decay", 0, 1, low_open=True, optional=True)
  c.at_least(f"{o}.accumulate", 1, optional=True)


def _check_model(c: _Checker) -> None:
  for field in ("width", "depth", "num_heads", "mlp_dim", "patch_size", "tubelet_size"):
    c.at_least(f"model.{field}", 1, optional=True)
  width, heads = c.get("model.width", None), c.get("model.num_heads", None)
  if _integer(1)(width) and _integer(1)(heads) and width % heads:
    c.add("model.num_heads", heads, f"a divisor of model.width ({width})")
  for rate in ("drop_path_rate", "dropout_rate"):
    c.within(f"model.{rate}", 0, 1, high_open=True, optional=True)
  patch, tubelet = c.get("model.patch_size", None), c.get("model.tubelet_size", None)
  if _integer(1)(patch) and _integer(1)(c.get("data.image_size", None)) and c.get("data.image_size") % patch:
    c.add("data.image_size", c.get("data.image_size"), f"a multiple of model.patch_size ({patch})")
  if _integer(1)(tubelet) and _integer(1)(c.get("data.num_frames", None)) and c.get("data.num_frames") % tubelet:
    c.add("data.num_frames", c.get("data.num_frames"), f"a multiple of model.tubelet_size ({tubelet})")


def source_blocks(config) -> tuple[int, ...] | None:
  """The blocks of the model the job prunes (1-based ids of the original model), without loading weights:
  1 … depth of the model config for a model made here, a checkpoint's config.json (gardener_jax or HuggingFace;
  a pruned one's `kept_blocks`), or the named variant's; None if unknown."""
  from gardener_jax.models import VARIANTS

  c = _Checker(config)
  source = c.get("init.source", "")
  if source in ("pretrain", "random_hf"):
    depth = c.get("model.depth", None)
    return tuple(range(1, depth + 1)) if _integer(1)(depth) else None
  config_file = pathlib.Path(str(source)).expanduser() / "config.json"
  if config_file.is_file():
    try:
      saved = json.loads(config_file.read_text())
      depth = int(saved.get("depth") or saved["num_hidden_layers"])
      kept = saved.get("kept_blocks") or saved.get("gardener_kept_blocks")
      return tuple(int(b) for b in kept) if kept else tuple(range(1, depth + 1))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
      return None
  variant = c.get("init.variant", "")
  return tuple(range(1, VARIANTS[variant]["depth"] + 1)) if variant in VARIANTS else None


def source_depth(config) -> int | None:
  """The depth of the model the job prunes (see `source_blocks`); None if unknown."""
  blocks = source_blocks(config)
  return None if blocks is None else len(blocks)


def _check_init(c: _Checker) -> None:
  from gardener_jax.models import VARIANTS

  source = c.get("init.source", "")
  if source == "pretrain":
    if c.get("pretrain", None) is None:
      c.add("pretrain", _MISSING, "init.source 'pretrain' makes the source model from config.pretrain")
    else:
      _check_training(c, "pretrain.")
      if c.get("pretrain.masked", None) is not None:
        _check_training(c, "pretrain.masked.")
        c.within("pretrain.masked.mae.mask_ratio", 0, 1, low_open=True, high_open=True)
      c.one_of("pretrain.save_dtype", SAVE_DTYPES[:-1], optional=True)
  elif source != "random_hf":
    if not source:
      c.add("init.source", source, "'pretrain', 'random_hf', or the path of the checkpoint to prune")
    elif not pathlib.Path(str(source)).expanduser().exists():
      c.add("init.source", source, "an existing file or directory (a PyTorch or gardener_jax checkpoint)")
  if variant := c.get("init.variant", ""):
    if variant not in VARIANTS:
      c.add("init.variant", variant, f"one of {', '.join(map(repr, VARIANTS))}")


def _check_prune(c: _Checker, blocks: tuple[int, ...] | None) -> None:
  from gardener_jax import criteria
  from gardener_jax.entropy import Discretization

  criterion = c.get("prune.criterion", "none")
  if criterion == "none":
    return
  c.one_of("prune.criterion", ["none", "explicit", *criteria.CRITERIA])
  try:
    Discretization.parse(str(c.get("prune.discretize", "exact")))
  except ValueError:
    c.add("prune.discretize", c.get("prune.discretize"), "exact, float16, bfloat16 or hist:K with K ≥ 2")
  ratio, remove = c.get("prune.ratio", 0) or 0, c.get("prune.remove", 0) or 0
  depth = len(blocks) if blocks else None
  limit = f" of the {depth} blocks" if depth else ""
  if chosen := c.get("prune.blocks", "") or "":
    try:
      ids = [int(b) for b in str(chosen).split(",") if b.strip()]
    except ValueError:
      ids = []
    if not ids or len(set(ids)) != len(ids) or (blocks and (len(ids) >= depth or not set(ids) <= set(blocks))):
      held = f" ({', '.join(map(str, blocks))})" if blocks and blocks != tuple(range(1, depth + 1)) else ""
      c.add("prune.blocks", chosen, f"distinct 1-based block ids, comma-separated, fewer than all{limit}{held}")
    return
  if ratio and remove:
    c.add("prune.remove", remove, f"0 when prune.ratio ({ratio}) is set: give one of the two")
  elif not ratio and not remove:
    c.add("prune.ratio", ratio, "a ratio in (0, 1) or prune.remove = k blocks (or prune.blocks)")
  elif ratio:
    if c.within("prune.ratio", 0, 1, low_open=True, high_open=True) and depth:
      from gardener_jax.prune import num_to_remove

      try:
        num_to_remove(ratio, depth)
      except ValueError as e:
        c.add("prune.ratio", ratio, str(e))
  elif c.at_least("prune.remove", 1) and depth and remove > depth - 1:
    c.add("prune.remove", remove, f"1 … {depth - 1}{limit}")
  if criterion == "oracle":
    oracle = c.get("prune.oracle", "")
    if not oracle:
      c.add("prune.oracle", oracle, 'criterion oracle reads a JSON file {"accuracy": {"<block id>": <accuracy>}}')
    else:
      try:
        criteria.read_oracle(oracle)
      except ValueError as e:
        c.add("prune.oracle", oracle, str(e))
  if criterion in criteria.CRITERIA and criteria.needs_data(criterion):
    c.at_least("prune.calibration_clips", 1, optional=True)


def _check_sweep(c: _Checker, depth: int | None) -> None:
  from gardener_jax import criteria

  known = list(criteria.CRITERIA)
  if unknown := [n for n in c.get("sweep.criteria", ()) if n not in known]:
    c.add("sweep.criteria", tuple(unknown), f"registered criteria: {', '.join(known)}")
  levels = list(c.get("sweep.levels", ()))
  if not levels or not all(_integer(1)(k) and (not depth or k <= depth - 1) for k in levels):
    c.add("sweep.levels", tuple(levels), f"blocks removed per level, each 1 … {depth - 1 if depth else 'depth − 1'}")
  epochs = list(c.get("sweep.epochs", ()))
  if (depth and len(epochs) < depth) or not all(_integer(1)(e) for e in epochs):
    c.add("sweep.epochs", tuple(epochs), f"finetuning epochs ≥ 1 for each number of blocks removed, 0 … "
          f"{depth - 1 if depth else 'depth − 1'}")
  for field in ("sweep.criteria", "sweep.levels", "sweep.random_seeds"):
    if len(set(values := tuple(c.get(field, ())))) != len(values):
      c.add(field, values, "each value once (a repeat would count one training twice)")
  if "random" in c.get("sweep.criteria", ()) and not c.get("sweep.random_seeds", ()):
    c.add("sweep.random_seeds", c.get("sweep.random_seeds", ()), "at least one seed for the random criterion")
  seeds = c.get("sweep.seeds", None)
  if seeds is not None and (not all(_integer(0)(s) for s in seeds) or len(set(seeds)) != len(seeds)):
    c.add("sweep.seeds", seeds, "distinct training seeds ≥ 0, e.g. (0, 1, 2); empty: the config's seed")


def _problems(config, *checks: Callable[[_Checker], None]) -> list[Problem]:
  c = _Checker(config)
  c.at_least("seed", 0)
  for check_section in (_check_model, _check_data, _check_training, *checks):
    check_section(c)
  return c.problems


def job_problems(config) -> list[Problem]:
  """The prune-and-finetune job (`gardener train`)."""
  return _problems(config, _check_init, lambda c: _check_prune(c, source_blocks(c.config)))


def pretrain_problems(config) -> list[Problem]:
  """A masked-pretraining job (`gardener pretrain`, `job = 'pretrain'`)."""
  return _problems(config, lambda c: c.within("mae.mask_ratio", 0, 1, low_open=True, high_open=True))


def sweep_problems(config) -> list[Problem]:
  """A sweep: the job each run is, and the sweep section (its runs remove blocks by the sweep's levels)."""
  return _problems(config, _check_init, lambda c: _check_sweep(c, source_depth(c.config)))


def exit_on_problems(config, kind: str) -> None:
  """`check` for the command line: a user's mistakes end the job with status 2 and no traceback."""
  try:
    check(config, kind)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def check(config, kind: str) -> None:
  """Raises ConfigError with every problem of a `kind` ('job', 'pretrain' or 'sweep') config."""
  problems = {"job": job_problems, "pretrain": pretrain_problems, "sweep": sweep_problems}[kind](config)
  if problems:
    raise ConfigError(problems)
