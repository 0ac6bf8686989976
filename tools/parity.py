"""Training parity: does a finetune in JAX follow the same trajectory as the same finetune in PyTorch?

  python -m tools.parity --config configs/ucf101_vitb.py --steps 20
  python -m tools.parity --config configs/demo.py --checkpoint runs/demo/pruned --json parity.json
  python -m tools.parity --config configs/ucf101_vitb.py --steps 3 --inputs random --batch_size 2 \\
      --config.init.source=random_hf --num_classes 101

The JAX side is the training loop's own step: `train.compile_train_step` on `make_mesh()` (every local
device) with `optim.make_optimizer`, `train.classification_loss` and float32 master weights. The PyTorch
side is written here, independently of optax: transformers' VideoMAEForVideoClassification holding the
same weights, in train mode, and torch.optim.AdamW with one parameter group per tensor (learning rate
scaled by layer_decay ** (depth + 1 - layer), weight decay on matrices and conv kernels only), the same
linear warm-up + cosine schedule, label smoothing and `clip_grad_norm_`. `optim.accumulate` > 1 is
implemented there as optax.MultiSteps does it: the gradients of k micro-batches averaged, one update.

Both sides start from the weights the job would finetune (--checkpoint, or the config's initial
checkpoint made in --workdir; pruned by --blocks; a pretraining checkpoint turned classifier; the head
replaced for the task's classes) and read the same batches, drawn once: from the config's training split
through the job's input pipeline (--inputs data), or seeded uniform uint8 clips and random labels
(--inputs random, for when the dataset is not on the machine; the classes are config.data.classes, else
the checkpoint's head). --steps counts micro-batches, as the loop does.

What cannot match across frameworks is forced and printed: mixup and CutMix off, dropout, attention
dropout and drop path 0 (their random streams differ), float32 compute and full-precision matmuls.

Prints a markdown table (step | lr jax | lr torch | loss jax | loss torch | rel. diff), then the largest
relative loss difference, the largest learning-rate difference, the largest relative parameter difference
at the end (per tensor max|jax - torch| / max|torch|, the worst tensor named), the seconds of each side,
the devices and the versions; --json writes the same as records and a summary.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import pathlib
import re
import sys
import tempfile
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from absl import app, flags
from ml_collections import config_flags

from gardener_jax import frameworks, logs, pipeline, train
from gardener_jax import optim as optim_lib
from gardener_jax.checkpoint import load_tree, read_config
from gardener_jax.data import input_pipeline, sampling, sources
from gardener_jax.models import VARIANTS, ModelConfig, VideoMAE
from gardener_jax.models.surgery import classifier_from_pretraining, replace_head
from gardener_jax.prune import prune
from gardener_jax.sharding import global_batch, make_mesh, replicated
from tools.convert_torch.convert import torch_model
from tools.convert_torch.errors import ConversionError

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file("config", None, "job config (a configs/*.py file)", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "training steps (micro-batches) on each side", lower_bound=1)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "gardener_jax checkpoint to finetune; default: the config's "
                                  "initial checkpoint (init.source), made in --workdir")
_BLOCKS = flags.DEFINE_list("blocks", [], "1-based blocks to remove first, e.g. 2,5")
_INPUTS = flags.DEFINE_enum("inputs", "data", ["data", "random"], "data: batches of the config's training split "
                            "through the job's input pipeline; random: seeded uniform uint8 clips and random labels")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "global batch size; default train.batch_size", lower_bound=1)
_NUM_CLASSES = flags.DEFINE_integer("num_classes", None, "init.source 'random_hf' with a config whose model section "
                                    "has no num_classes (configs/ucf101_vitb.py): the random model's classes",
                                    lower_bound=1)
_WORKDIR = flags.DEFINE_string("workdir", None, "where the initial checkpoint is made; default a temporary directory")
_JSON = flags.DEFINE_string("json", None, "write the per-step records and the summary to this file")

# Settings whose random streams (or precision) cannot match across frameworks: forced on both sides.
FORCED_TRAIN = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "dtype": "float32"}
FORCED_MODEL = {"dropout_rate": 0.0, "attention_dropout_rate": 0.0, "drop_path_rate": 0.0}
# What init.source 'random_hf' reads from config.model, and where it comes from when the section lacks it.
RANDOM_HF_FIELDS = ("width", "depth", "num_heads", "mlp_dim", "patch_size", "tubelet_size", "num_classes")


def _bad_input(message: str) -> app.UsageError:
  return app.UsageError(message, exitcode=2)


@dataclasses.dataclass
class Task:
  """What both sides train: float32 numpy weights, the model holding them, the batches and the recipe."""

  params: dict
  model_config: ModelConfig
  batches: list[dict]  # numpy: 'clips' (B, T, H, W, C) uint8, 'label' (B,) int32
  config: ml_collections.ConfigDict  # seed, train (label_smoothing) and optim, with what cannot match forced

  @property
  def accumulate(self) -> int:
    return max(1, self.config.optim.get("accumulate", 1))

  @property
  def num_updates(self) -> int:
    return len(self.batches) // self.accumulate


@dataclasses.dataclass
class Trajectory:
  """One framework's run: per-step losses and learning rates, the final params in torch naming."""

  losses: list[float]
  lrs: list[float]
  params: dict[str, np.ndarray]
  seconds: float
  first_step_seconds: float
  grad_norms: list[float] | None = None  # JAX only: the gradient's norm before clipping


# --- what both sides train ---------------------------------------------------------------------------


def _change(name: str, old, new) -> str:
  return f"{name} = {new}" + ("" if old == new else f" (was {old})")


def comparable_config(config) -> tuple[ml_collections.ConfigDict, list[str]]:
  """A copy of the job config with mixup and CutMix off and float32 compute; notes of what was forced."""
  config, notes = copy.deepcopy(config), []
  with config.unlocked():
    for key, value in FORCED_TRAIN.items():
      old = config.train.get(key)
      config.train[key] = value if old is None else type(old)(value)
      notes.append(_change(f"train.{key}", old, value))
  return config, notes


def comparable_model(model_config: ModelConfig) -> tuple[ModelConfig, list[str]]:
  """The model without dropout, attention dropout and drop path; notes of what was forced."""
  notes = [_change(f"model.{key}", getattr(model_config, key), value) for key, value in FORCED_MODEL.items()]
  return model_config.replace(**FORCED_MODEL), notes


def random_hf_config(config, num_classes: int | None) -> tuple[ml_collections.ConfigDict, list[str]]:
  """`config` with the model fields init.source 'random_hf' reads: those config.model lacks come from
  init.variant (patch 16, tubelet 2) and `num_classes`."""
  missing = [f for f in RANDOM_HF_FIELDS if config.model.get(f) is None]
  if not missing:
    return config, []
  fills = {**VARIANTS.get(config.init.get("variant") or "", {}), "patch_size": 16, "tubelet_size": 2,
           "num_classes": num_classes}
  unknown = [f for f in missing if fills.get(f) is None]
  if unknown:
    raise _bad_input(f"init.source 'random_hf' reads model.{', model.'.join(unknown)}, which this config lacks: set "
                     "init.variant for the sizes, --num_classes for the classes")
  config = copy.deepcopy(config)
  with config.unlocked():
    config.model.update({f: fills[f] for f in missing})
  return config, [f"random_hf: model.{f} = {fills[f]} (config.model has none)" for f in missing]


def initial_checkpoint(config, checkpoint: str | None, workdir: pathlib.Path, num_classes: int | None):
  """(the checkpoint the job would finetune, notes): `checkpoint` or the config's initial checkpoint."""
  if checkpoint:
    return pathlib.Path(checkpoint), []
  if config.init.source == "pretrain":
    raise _bad_input("init.source 'pretrain' would train the source model first (masked pretraining, then a "
                     "supervised run); make it with `gardener train` and pass WORKDIR/pretrained with --checkpoint")
  notes = []
  if config.init.source == "random_hf":
    config, notes = random_hf_config(config, num_classes)
  try:
    return pipeline.initial_stage(config, workdir), notes
  except (ConversionError, OSError, ValueError) as e:
    raise _bad_input(f"init.source {config.init.source!r}: {e}") from None


def load_model(directory: pathlib.Path) -> tuple[dict, ModelConfig]:
  try:
    return load_tree(directory)["params"], read_config(directory)
  except (OSError, ValueError) as e:
    raise _bad_input(f"--checkpoint {directory}: not a gardener_jax checkpoint ({e})") from None


def task_classes(config, model_config: ModelConfig, splits: sources.Splits | None) -> list[str]:
  """The finetune's classes: the data's; with random inputs config.data.classes, else the checkpoint's head."""
  if splits is not None:
    return list(splits.names)
  if (config.get("data") or {}).get("classes"):
    return list(config.data.classes)
  if model_config.num_classes:
    return frameworks.class_names(model_config)
  raise _bad_input("--inputs random: this model has no head and config.data.classes is empty; name the classes "
                   "(--config.data.classes)")


def finetuned_model(params, model_config: ModelConfig, blocks: Sequence[int], class_names: Sequence[str],
                    config) -> tuple[dict, ModelConfig]:
  """What the job finetunes, as float32 numpy: the checkpoint without `blocks`, a pretraining checkpoint
  turned classifier, the head of `class_names`, the config's training-time model settings."""
  if blocks:
    try:
      params, model_config = prune(params, model_config, blocks)
    except ValueError as e:
      raise _bad_input(f"--blocks: {e}") from None
  seed = config.get("seed", 0)
  if model_config.is_pretraining:
    params, model_config = classifier_from_pretraining(params, model_config, len(class_names), seed)
  params, model_config = replace_head(params, model_config, class_names, seed)
  model_config = pipeline.training_model(model_config, config.get("model") or {})
  return jax.tree.map(np.asarray, jax.device_get(train.master_weights(params))), model_config


def random_batches(model_config: ModelConfig, batch_size: int, steps: int, seed: int) -> list[dict]:
  """Seeded uniformly random uint8 clips of the model's shape and uniformly random labels."""
  rng = np.random.default_rng(seed)
  shape = (batch_size, model_config.num_frames, model_config.image_size, model_config.image_size,
           model_config.in_channels)
  return [{"clips": rng.integers(0, 256, shape, np.uint8),
           "label": rng.integers(0, model_config.num_classes, batch_size).astype(np.int32)} for _ in range(steps)]


def data_batches(config, splits: sources.Splits, batch_size: int, steps: int) -> list[dict]:
  """The first `steps` batches the job's training input pipeline gives (the config's seed)."""
  stream = input_pipeline.pipelines_from_config(config.data, config.seed).train(splits.train, batch_size)
  return [{"clips": np.asarray(b["clips"], np.uint8), "label": np.asarray(b["label"], np.int32)}
          for b in itertools.islice(stream, steps)]


def check_clip_shape(batches: list[dict], model_config: ModelConfig) -> None:
  expected = (model_config.num_frames, model_config.image_size, model_config.image_size, model_config.in_channels)
  got = tuple(batches[0]["clips"].shape[1:])
  if got != expected:
    raise _bad_input(f"the data gives clips of {got} (data.num_frames, data.image_size); the model expects "
                     f"{expected}")


# --- JAX: the training loop's step ---------------------------------------------------------------------


def jax_trajectory(task: Task) -> Trajectory:
  """`task` trained by the loop's own step, over every local device, in float32 with full-precision matmuls."""
  model_config, optim = task.model_config, task.config.optim
  loss_fn = train.classification_loss(VideoMAE(model_config, dtype=jnp.float32), model_config.num_classes,
                                      train.TrainOptions.from_config(task.config.train))
  mesh = make_mesh()
  tx, schedule = optim_lib.make_optimizer(optim, task.params, model_config.depth, task.num_updates)
  step = train.compile_train_step(mesh, loss_fn, tx, schedule, task.accumulate)
  state = jax.device_put(train.init_state(task.params, tx), replicated(mesh))
  rng = jax.random.key(task.config.get("seed", 0))
  votes = global_batch(mesh, {"votes": np.zeros(jax.local_device_count(), np.int32)})["votes"]
  losses, lrs, grad_norms, seconds = [], [], [], []
  with jax.default_matmul_precision("highest"):
    for batch in task.batches:
      start = time.perf_counter()
      state, metrics = step(state, global_batch(mesh, batch), rng, votes)
      metrics = jax.device_get(metrics)
      seconds.append(time.perf_counter() - start)
      losses.append(float(metrics["loss"]))
      lrs.append(float(metrics["lr"]))
      grad_norms.append(float(metrics["grad_norm"]))
  final, _ = torch_model(jax.device_get(state.params), model_config)
  return Trajectory(losses, lrs, _numpy_state(final), sum(seconds), seconds[0], grad_norms)


# --- PyTorch: the same recipe, written independently ----------------------------------------------------


def warmup_cosine(update: int, peak: float, warmup_steps: int, decay_steps: int) -> float:
  """optax.warmup_cosine_decay_schedule(0, peak, warmup_steps, decay_steps, end_value=0) at `update`: linear
  from 0 over `warmup_steps`, then half a cosine down to 0 at `decay_steps`, which counts the warm-up."""
  if update < warmup_steps:
    return peak * update / warmup_steps
  progress = min(update - warmup_steps, decay_steps - warmup_steps) / (decay_steps - warmup_steps)
  return peak * 0.5 * (1 + math.cos(math.pi * progress))


def recipe_schedule(optim, num_updates: int) -> Callable[[int], float]:
  """The recipe's learning rate per update (SPEC §5): the warm-up ends before the last update, the cosine
  reaches 0 after it."""
  warmup = min(optim.warmup_steps, max(num_updates - 1, 0))
  return lambda update: warmup_cosine(update, optim.lr, warmup, max(num_updates, 1))


def hf_layer(name: str, depth: int) -> int:
  """The layer of a transformers VideoMAE parameter for layer-wise lr decay: 0 the embeddings, i + 1 block
  `encoder.layer.i`, depth + 1 the rest (fc_norm or the final layernorm, the classifier)."""
  if ".embeddings." in f".{name}":
    return 0
  block = re.search(r"(?:^|\.)encoder\.layer\.(\d+)\.", name)
  return int(block.group(1)) + 1 if block else depth + 1


def param_groups(model: torch.nn.Module, depth: int, optim) -> list[dict]:
  """One AdamW group per parameter: its lr scale layer_decay ** (depth + 1 - layer) (1 when layer_decay ≥ 1),
  weight decay on weight matrices and conv kernels (ndim ≥ 2) only."""
  decay = optim.layer_decay if optim.layer_decay < 1 else 1.0
  return [{"params": [p], "name": name, "lr_scale": decay ** (depth + 1 - hf_layer(name, depth)),
           "weight_decay": optim.weight_decay if p.ndim >= 2 else 0.0} for name, p in model.named_parameters()]


def hf_clips(clips: np.ndarray, device: torch.device) -> torch.Tensor:
  """(B, T, H, W, C) uint8 → transformers' (B, T, C, H, W), ImageNet-normalised (the JAX step
  normalises on the device)."""
  return torch.from_numpy(sampling.normalize(clips)).permute(0, 1, 4, 2, 3).contiguous().to(device)


def reference_model(params, model_config: ModelConfig) -> tuple[torch.nn.Module, list[str]]:
  """The transformers VideoMAE holding `params`, its final norm's eps set to the model's (transformers fixes
  fc_norm's at 1e-5); notes."""
  try:
    model, warnings = torch_model(params, model_config)
  except ConversionError as e:
    raise _bad_input(f"no transformers VideoMAE can hold this model: {e}") from None
  final_norm = model.fc_norm if model_config.use_mean_pooling else model.videomae.layernorm
  final_norm.eps = model_config.head_norm_eps
  return model, [f"torch model: {w}" for w in warnings] + [f"torch model: final norm eps set to "
                                                            f"{model_config.head_norm_eps}, as the Flax model's"]


def torch_device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_trajectory(task: Task, model: torch.nn.Module) -> Trajectory:
  """`task` trained by AdamW on `model` (moved to the torch device, trained in place)."""
  optim, device = task.config.optim, torch_device()
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
  model.to(device).train()
  schedule = recipe_schedule(optim, task.num_updates)
  optimizer = torch.optim.AdamW(param_groups(model, task.model_config.depth, optim), lr=0.0,
                                betas=(optim.b1, optim.b2), eps=1e-8)
  smoothing = task.config.train.get("label_smoothing", 0.0)
  losses, lrs, seconds = [], [], []
  for step, batch in enumerate(task.batches):
    start = time.perf_counter()
    lr = schedule(step // task.accumulate)  # optax reads the schedule at the update count before the update
    logits = model(pixel_values=hf_clips(batch["clips"], device)).logits
    loss = F.cross_entropy(logits, torch.from_numpy(batch["label"]).long().to(device), label_smoothing=smoothing)
    (loss / task.accumulate).backward()  # the mean of the micro-batches' gradients, as optax.MultiSteps
    if (step + 1) % task.accumulate == 0:
      for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
      if optim.clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.clip_norm)
      optimizer.step()
      optimizer.zero_grad(set_to_none=True)
    losses.append(loss.item())
    lrs.append(lr)
    seconds.append(time.perf_counter() - start)
  return Trajectory(losses, lrs, _numpy_state(model), sum(seconds), seconds[0])


def _numpy_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {name: value.detach().cpu().numpy() for name, value in model.state_dict().items()}


# --- comparison -------------------------------------------------------------------------------------------


def relative_param_differences(jax_params: dict, torch_params: dict) -> dict[str, float]:
  """Per tensor (torch naming) max|jax - torch| / max|torch|."""
  if sorted(jax_params) != sorted(torch_params):
    raise ValueError(f"the two models name different tensors: {sorted(set(jax_params) ^ set(torch_params))}")
  tiny = np.finfo(np.float32).tiny
  return {name: float(np.max(np.abs(jax_params[name] - ref)) / max(float(np.max(np.abs(ref))), tiny))
          for name, ref in torch_params.items()}


def step_records(jax_run: Trajectory, torch_run: Trajectory) -> list[dict]:
  return [{"step": i + 1, "lr_jax": lr_j, "lr_torch": lr_t, "loss_jax": loss_j, "loss_torch": loss_t,
           "rel_diff": abs(loss_j - loss_t) / abs(loss_t), "grad_norm_jax": norm}
          for i, (lr_j, lr_t, loss_j, loss_t, norm) in enumerate(zip(jax_run.lrs, torch_run.lrs, jax_run.losses,
                                                                     torch_run.losses, jax_run.grad_norms))]


def device_names() -> dict[str, str]:
  devices, cpu = jax.local_devices(), frameworks.cpu_model()
  jax_devices = f"{devices[0].platform} × {len(devices)}" + (
      f" ({cpu})" if devices[0].platform == "cpu" else f" ({devices[0].device_kind})")
  device = torch_device()
  torch_devices = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f"cpu ({cpu})"
  return {"jax": jax_devices, "torch": torch_devices, "cpu": cpu}


def versions() -> dict[str, str]:
  import optax
  import transformers

  return {"jax": jax.__version__, "optax": optax.__version__, "torch": torch.__version__,
          "transformers": transformers.__version__}


def compare(task: Task) -> dict:
  """Both sides trained on `task`: {'records': per step, 'summary': the largest differences, times, devices}."""
  model, notes = reference_model(task.params, task.model_config)
  jax_run = jax_trajectory(task)
  torch_run = torch_trajectory(task, model)
  records = step_records(jax_run, torch_run)
  param_diffs = relative_param_differences(jax_run.params, torch_run.params)
  worst_step = max(records, key=lambda r: r["rel_diff"])
  worst_param = max(param_diffs, key=param_diffs.get)
  summary = {
      "steps": len(task.batches), "updates": task.num_updates, "accumulate": task.accumulate,
      "batch_size": len(task.batches[0]["label"]), "depth": task.model_config.depth,
      "kept_blocks": list(task.model_config.kept_blocks), "num_classes": task.model_config.num_classes,
      "max_rel_loss_diff": worst_step["rel_diff"], "max_rel_loss_diff_step": worst_step["step"],
      "max_lr_diff": max(abs(r["lr_jax"] - r["lr_torch"]) for r in records),
      "max_rel_param_diff": param_diffs[worst_param], "max_rel_param_diff_tensor": worst_param,
      "max_grad_norm_jax": max(jax_run.grad_norms), "clip_norm": task.config.optim.clip_norm,
      "seconds": {"jax": jax_run.seconds, "torch": torch_run.seconds},
      "first_step_seconds": {"jax": jax_run.first_step_seconds, "torch": torch_run.first_step_seconds},
      "devices": device_names(), "versions": versions(), "notes": notes,
  }
  return {"records": records, "summary": summary}


def markdown_table(records: list[dict]) -> str:
  lines = ["| step | lr jax | lr torch | loss jax | loss torch | rel. diff |", "|---:|---:|---:|---:|---:|---:|"]
  lines += [f"| {r['step']} | {r['lr_jax']:.6e} | {r['lr_torch']:.6e} | {r['loss_jax']:.7f} | {r['loss_torch']:.7f} "
            f"| {r['rel_diff']:.2e} |" for r in records]
  return "\n".join(lines)


def summary_text(summary: dict) -> str:
  seconds, first = summary["seconds"], summary["first_step_seconds"]
  return "\n".join([
      f"max relative loss difference: {summary['max_rel_loss_diff']:.3e} (step {summary['max_rel_loss_diff_step']})",
      f"max |lr jax - lr torch|: {summary['max_lr_diff']:.3e}",
      f"max relative param difference: {summary['max_rel_param_diff']:.3e} ({summary['max_rel_param_diff_tensor']})",
      f"max gradient norm (jax, before clipping): {summary['max_grad_norm_jax']:.4g} "
      f"(clip_norm {summary['clip_norm']})",
      f"seconds: jax {seconds['jax']:.2f} (first step, compilation included, {first['jax']:.2f}), "
      f"torch {seconds['torch']:.2f} (first step {first['torch']:.2f})",
      f"devices: jax {summary['devices']['jax']}; torch {summary['devices']['torch']}",
      "versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()),
      *(f"note: {note}" for note in summary["notes"]),
  ])


# --- the command ------------------------------------------------------------------------------------------


def _blocks(values: Sequence[str]) -> list[int]:
  try:
    return [int(v) for v in values]
  except ValueError:
    raise _bad_input(f"--blocks {','.join(values)}: expected 1-based block numbers, e.g. 2,5") from None


def prepare_task(config, *, steps: int, checkpoint: str | None, blocks: Sequence[int], inputs: str,
                 batch_size: int | None, num_classes: int | None, workdir: pathlib.Path):
  """(the task the flags describe, its checkpoint, notes, forced settings)."""
  config, forced = comparable_config(config)
  batch_size = batch_size or config.train.batch_size
  accumulate = max(1, config.optim.get("accumulate", 1))
  if batch_size % jax.device_count():
    raise _bad_input(f"batch size {batch_size} is not a multiple of the {jax.device_count()} devices")
  if steps < accumulate:
    raise _bad_input(f"--steps {steps} < optim.accumulate {accumulate}: no update would be made")
  directory, notes = initial_checkpoint(config, checkpoint, workdir, num_classes)
  params, model_config = load_model(directory)
  splits = sources.from_config(config.data, list(config.data.classes), config.seed) if inputs == "data" else None
  params, model_config = finetuned_model(params, model_config, blocks, task_classes(config, model_config, splits),
                                         config)
  model_config, forced_model = comparable_model(model_config)
  forced += forced_model + ["matmul precision: full float32 on both sides (no TF32)"]
  if accumulate > 1:
    notes.append(f"optim.accumulate = {accumulate}: PyTorch averages the gradients of {accumulate} micro-batches "
                 "per update, as optax.MultiSteps")
  batches = (data_batches(config, splits, batch_size, steps) if splits is not None
             else random_batches(model_config, batch_size, steps, config.seed))
  check_clip_shape(batches, model_config)
  return Task(params, model_config, batches, config), directory, notes, forced


def run(config, *, workdir: pathlib.Path, inputs: str = "data", **options) -> dict:
  """Prepares the task the flags describe (`prepare_task`'s options), prints it and the forced settings,
  trains both sides and prints the comparison; returns {'records', 'summary'}."""
  task, directory, notes, forced = prepare_task(config, workdir=workdir, inputs=inputs, **options)
  c = task.model_config
  print(f"checkpoint {directory}: depth {c.depth} (blocks {list(c.kept_blocks)}), {c.num_classes} classes, "
        f"{len(task.batches)} steps of batch {len(task.batches[0]['label'])}, {inputs} inputs")
  print("\n".join(["forced, as they cannot match across frameworks:", *(f"  {n}" for n in forced)]))
  result = compare(task)
  summary = result["summary"]
  summary.update(checkpoint=str(directory), inputs=inputs, forced=forced, notes=notes + summary["notes"])
  print(f"\n{markdown_table(result['records'])}\n\n{summary_text(summary)}")
  return result


def _run_flags(argv: Sequence[str]) -> dict:
  if len(argv) > 1:
    raise _bad_input(f"unexpected arguments: {list(argv[1:])}")
  if _CONFIG.value is None:
    raise _bad_input("--config is required (a configs/*.py file)")
  options = dict(steps=_STEPS.value, checkpoint=_CHECKPOINT.value, blocks=_blocks(_BLOCKS.value),
                 inputs=_INPUTS.value, batch_size=_BATCH_SIZE.value, num_classes=_NUM_CLASSES.value)
  with tempfile.TemporaryDirectory(prefix="parity_") as scratch:
    result = run(_CONFIG.value, workdir=pathlib.Path(_WORKDIR.value or scratch), **options)
  if _JSON.value:
    pathlib.Path(_JSON.value).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {_JSON.value}")
  return result


def main(argv: Sequence[str]) -> dict:
  """`python -m tools.parity` for tests: parses the command line `argv` (program name first) from the flags'
  defaults, runs, returns {'records', 'summary'}. Bad input raises app.UsageError."""
  FLAGS.unparse_flags()
  for override in [name for name in FLAGS if name.startswith("config.")]:  # an earlier call's --config.* flags
    delattr(FLAGS, override)
  saved, sys.argv = sys.argv, list(argv)  # config_flags finds the --config.* overrides in sys.argv
  try:
    rest = FLAGS(list(argv))
  finally:
    sys.argv = saved
  return _run_flags(rest)


def _app_main(argv: Sequence[str]) -> None:
  logs.quiet_logging()
  _run_flags(argv)


if __name__ == "__main__":
  app.run(_app_main)
