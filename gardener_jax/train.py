"""Data-parallel finetuning over every device of a host or a pod.

The step is written per device: each device computes gradients on its shard of the global batch and
`lax.pmean` averages them over the 'data' mesh axis; `jax.shard_map` under `jax.jit` runs it.
Parameters and optimiser state are replicated float32 master weights, whatever the checkpoint's
dtype; `train.dtype` is the compute dtype only. Each process feeds its own shard of the data.

What the loop guarantees, on one process or many:
- a step whose loss or gradient norm is not finite is not applied: the run stops, naming the last
  checkpoint, and no non-finite value is ever saved;
- preemption is agreed: each process's SIGTERM flag is a vote fed to the step, whose `pmax` every
  process reads, so all of them save the same step once and exit;
- a relaunch restores the latest complete checkpoint — state and each process's place in its input
  stream (grain's iterator state) — and reaches the params of a run never stopped;
- `best/` is chosen on a validation split, never on the test split, and the final metrics come from
  the final params.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import pathlib
import signal
import time
from typing import Any, Callable

import flax
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import PartitionSpec as P

from gardener_jax import files
from gardener_jax import optim as optim_lib
from gardener_jax.checkpoint import cast_floats
from gardener_jax.data import input_pipeline, sampling
from gardener_jax.evaluate import Evaluator, Selection, classification_evaluator
from gardener_jax.models import ModelConfig, VideoMAE
from gardener_jax.models.videomae import per_block, stacked as stacked_blocks
from gardener_jax.sharding import AXIS, global_batch, make_mesh, replicated

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]  # (params, batch, rng) → (loss, metrics)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


class NonFiniteStep(RuntimeError):
  """A step produced a non-finite loss or gradient; it was not applied."""


class Preempted(SystemExit):
  """Raised on every process after an agreed SIGTERM, once the state is saved."""


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """The fields of `config.train` the loop reads (hashable: the loss function closes over it)."""

  batch_size: int = 8
  label_smoothing: float = 0.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  checkpoint_every: int = 100
  log_every: int = 10
  eval_every_epochs: int = 1

  @classmethod
  def from_config(cls, train) -> TrainOptions:
    return cls(**{f.name: train[f.name] for f in dataclasses.fields(cls) if f.name in train})


def master_weights(params):
  """float32 copies of the parameters: float16/bfloat16 checkpoints are trained (and their Adam
  moments kept) in float32, as mixed-precision training does."""
  return cast_floats(params, np.float32)


def classification_loss(model: VideoMAE, num_classes: int, options: TrainOptions) -> LossFn:
  """Cross-entropy on label-smoothed, mixup/CutMix-mixed targets; dropout and drop path from `rng`."""
  def loss_fn(params, batch, rng):
    mix_rng, dropout_rng = jax.random.split(rng)
    targets = optim_lib.soft_targets(batch["label"], num_classes, options.label_smoothing)
    clips, targets = optim_lib.mix(mix_rng, sampling.normalize(batch["clips"]).astype(model.dtype), targets,
                                   options.mixup_alpha, options.cutmix_alpha, reverse=batch_reversed)
    logits = model.apply({"params": params}, clips, train=True, rngs={"dropout": dropout_rng})
    loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
  return loss_fn


def _train_step(state: TrainState, batch: dict, rng, votes, *, loss_fn: LossFn, tx, schedule, accumulate: int):
  rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(AXIS))
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
  grads, loss, metrics = _mean_over_devices((grads, loss, metrics))
  grad_norm = optax.tree.norm(grads)  # with a finite gradient, AdamW's update is finite too
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  metrics.update(loss=loss, grad_norm=grad_norm, finite=finite, lr=schedule(state.step // accumulate),
                 stop=jax.lax.pmax(votes.max(), AXIS) > 0)

  def apply(state):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
  return _unless_non_finite(finite, apply, state), metrics


def _release_free_heap() -> None:
  """Hands the C heap's free pages back to the OS (glibc's `malloc_trim`; elsewhere nothing). glibc keeps
  what XLA's compiler freed, 0.2–0.4 GB of resident memory after a ViT-B step compiles."""
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


def batch_reversed(x):
  """This device's share of the whole batch reversed (on one device, `x[::-1]`): mixup and CutMix pair the
  batch's first clip with its last, as timm does, not each device's first with its own last, which
  would mix a device's only clip with itself."""
  devices = jax.lax.axis_size(AXIS)
  if devices == 1:
    return x[::-1]
  return jax.lax.ppermute(x, AXIS, [(i, devices - 1 - i) for i in range(devices)])[::-1]


def _mean_over_devices(tree):
  """`pmean` over the data axis; on a one-device mesh the tree as it is, because XLA keeps a one-device
  all-reduce as a copy: a second gradient-sized buffer (340 MB for ViT-B)."""
  return tree if jax.lax.axis_size(AXIS) == 1 else jax.lax.pmean(tree, AXIS)


def _unless_non_finite(finite, apply, state):
  """`apply(state)` when `finite`, else `state` unchanged. On CPU a cond, which updates in place:
  selecting between the new and the old state there keeps both alive (0.11 GB more temporaries for
  a ViT-B masked-pretraining step, 0.56 GB outside shard_map). Elsewhere the select, which cost no
  memory on an H200 and needs no conditional (whose predicate XLA reads back to the host on GPUs)."""
  if jax.default_backend() == "cpu":
    return jax.lax.cond(finite, apply, lambda state: state, state)
  return jax.tree.map(lambda new, old: jnp.where(finite, new, old), apply(state), state)


def compile_train_step(mesh, loss_fn: LossFn, tx, schedule, accumulate: int = 1, compiler_options=None):
  """`step(state, batch, rng, votes) → (state, metrics)`: batch and votes split over the devices.
  `compiler_options`: XLA options for compiling this step only (see `step_compiler_options`)."""
  step = functools.partial(_train_step, loss_fn=loss_fn, tx=tx, schedule=schedule, accumulate=max(1, accumulate))
  return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS), P(), P(AXIS)), out_specs=(P(), P()),
                               check_vma=False), donate_argnums=0, compiler_options=compiler_options or None)


def compile_alone(jitted, *args):
  """`jitted` compiled ahead of time for `args` (later calls must bring the same shapes and shardings, as the
  loop's do); then JAX's staging and compilation caches are emptied, so the process keeps this executable
  but not the traces and executables of what ran before it (parameter init, layout conversions): about
  90 MB in the ViT-B masked-pretraining process on CPU (README). What else is called again compiles again."""
  compiled = jitted.lower(*args).compile()
  jax.clear_caches()
  return compiled


def init_state(params, tx) -> TrainState:
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


@dataclasses.dataclass
class _SigtermFlag:
  raised: bool = False

  def __call__(self, signum, frame):
    self.raised = True


class _MetricsLog:
  """metrics.jsonl (written by process 0) and the history behind the curves, reading as one run: a
  resumed run drops the records past the step it resumed from, and a record that repeats one of the
  same step and kind (the final evaluation of a relaunched finished run) replaces it."""

  def __init__(self, path: pathlib.Path, resumed_step: int):
    self.path, self.writer = path, jax.process_index() == 0
    records = [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
    self.history = [r for r in records if r["step"] <= resumed_step]
    self._position = {self._kind(r): i for i, r in enumerate(self.history)}
    if len(self.history) != len(records):
      self._rewrite()

  @staticmethod
  def _kind(record: dict) -> tuple:
    return record["step"], frozenset(record)

  def __call__(self, record: dict) -> None:
    if (i := self._position.get(self._kind(record))) is not None:
      self.history[i] = record
      self._rewrite()
      return
    self._position[self._kind(record)] = len(self.history)
    self.history.append(record)
    if self.writer:
      with self.path.open("a") as f:
        f.write(json.dumps(record) + "\n")

  def _rewrite(self) -> None:
    if self.writer:
      files.write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.history))


def _latest_manager(workdir: pathlib.Path, every: int) -> ocp.CheckpointManager:
  """The training state and input position, every `every` steps (and on demand), one kept."""
  return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=ocp.CheckpointManagerOptions(
      max_to_keep=1, save_interval_steps=every, enable_async_checkpointing=False))


def _best_manager(workdir: pathlib.Path, selection: Selection) -> ocp.CheckpointManager:
  """The params with the best validation metric."""
  return ocp.CheckpointManager((workdir / "best").absolute(), options=ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda metrics: metrics[selection.metric], best_mode=selection.mode,
      enable_async_checkpointing=False))


def _restore(latest: ocp.CheckpointManager, state: TrainState, iterator) -> TrainState:
  step = latest.latest_step()
  if step is None:
    return state
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  try:
    restored = latest.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                            data=grain.checkpoint.CheckpointRestore(iterator)))
  except ValueError as e:
    raise ValueError(f"{latest.directory}/{step}: cannot resume this run with {jax.process_count()} processes and "
                     f"this model and data ({e})") from None
  logging.info("resumed from step %d in %s", step, latest.directory)
  return restored.state


def scans_blocks(config) -> bool:
  """`train.scan_blocks` (default True): whether the models a training stage builds scan stacked blocks."""
  return config.train.get("scan_blocks", True)


def step_compiler_options(config) -> dict:
  """`train.compiler_options` (default none): XLA options (DebugOptions fields) for compiling the train step
  only, as `jax.jit(compiler_options=...)` takes them; unlike XLA_FLAGS they leave every other computation
  alone. On CPU, {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'} orders a scanned
  ViT-B step's work to need fewer temporaries (see the README's benchmarks)."""
  return dict((config.train.get("compiler_options") or {}).items())


def fit(*, params, loss_fn: LossFn, depth: int, train_source, evaluators: dict[str, Evaluator], config, seed: int,
        workdir, pipelines) -> dict:
  """Trains `params` on `train_source` with `loss_fn`; returns the final params, metrics and history.

  `params` come and go in the checkpoints' layout (blocks stacked); with `train.scan_blocks` False the loop
  keeps them, the optimiser state and the latest checkpoint in the `per_block` layout, which `loss_fn` and the
  evaluators' models must read (`scan_blocks=False`); `best/` holds them stacked.

  `evaluators`: optional 'val' (evaluated every `train.eval_every_epochs` and at the end; chooses
  `best/` by its `selection`) and 'test' (evaluated once, on the final params). `config` carries `train`
  (batch_size, epochs and the `TrainOptions` fields) and `optim` (see `optim.make_optimizer`; `depth`
  for its layer-wise decay); `pipelines` reads the data.
  """
  from tqdm import tqdm

  options = TrainOptions.from_config(config.train)
  workdir = pathlib.Path(workdir)
  mesh = make_mesh()
  if options.batch_size % jax.device_count():
    raise ValueError(f"train.batch_size {options.batch_size} is not a multiple of the {jax.device_count()} devices")
  if len(train_source) < jax.process_count():  # a process with no videos would end its stream while the others wait
    raise ValueError(f"{len(train_source)} training videos for {jax.process_count()} processes: each needs one")
  steps_per_epoch = max(1, len(train_source) // options.batch_size)
  total_steps = steps_per_epoch * config.train.epochs
  scan = scans_blocks(config)
  params = master_weights(params) if scan else per_block(master_weights(params))
  checkpoint_layout = (lambda tree: tree) if scan else stacked_blocks
  tx, schedule = optim_lib.make_optimizer(config.optim, params, depth, total_steps // max(1, config.optim.accumulate))
  train_step = compile_train_step(mesh, loss_fn, tx, schedule, config.optim.accumulate, step_compiler_options(config))
  state = jax.device_put(init_state(params, tx), replicated(mesh))
  latest = _latest_manager(workdir, options.checkpoint_every)
  best = _best_manager(workdir, evaluators["val"].selection) if "val" in evaluators else None
  local_batches = pipelines.train(train_source, options.batch_size // jax.process_count())
  iterator = input_pipeline.DevicePrefetch(iter(local_batches), functools.partial(global_batch, mesh),
                                          nice=pipelines.input_nice)
  state = _restore(latest, state, iterator)
  start_step = int(state.step)
  log = _MetricsLog(workdir / "metrics.jsonl", start_step)
  rng = jax.random.key(seed)
  eval_every = steps_per_epoch * options.eval_every_epochs

  def evaluate(name: str, step: int, params) -> dict:
    metrics = evaluators[name](params)
    log({"step": step, "epoch": step / steps_per_epoch, **{f"{name}_{k}": v for k, v in metrics.items()}})
    if name == "val":
      best.save(step, args=ocp.args.StandardSave(checkpoint_layout(params)), metrics=metrics)
    return metrics

  flag = _SigtermFlag()
  previous_handler = signal.signal(signal.SIGTERM, flag)
  clips_per_sec = 0.0
  try:
    if "val" in evaluators and 0 < start_step < total_steps and start_step % eval_every == 0:
      # The checkpoint of an evaluation step is saved before its evaluation, which a stop or a kill may have
      # cut off: evaluate it again, so that `best/` is chosen as in an uninterrupted run.
      evaluate("val", start_step, state.params)
    progress = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps, desc="finetune",
                    disable=jax.process_index() != 0, mininterval=2)
    window_start, window_steps = time.perf_counter(), 0
    for step in progress:
      votes = np.full(jax.local_device_count(), flag.raised, np.int32)
      args = (state, next(iterator), rng, global_batch(mesh, {"votes": votes})["votes"])
      if step == start_step:
        train_step = compile_alone(train_step, *args)
      state, metrics = train_step(*args)
      metrics = jax.device_get(metrics)
      done = step + 1
      if step == start_step:
        _release_free_heap()
      if not metrics["finite"]:
        kept = latest.latest_step()
        raise NonFiniteStep(
            f"step {done}: loss {float(metrics['loss'])}, gradient norm {float(metrics['grad_norm'])}; the update "
            f"was not applied and the run stops. The last finite checkpoint "
            f"({'step ' + str(kept) if kept is not None else 'none yet'}) is in {latest.directory}; lower "
            f"optim.lr, enable optim.clip_norm or check the input")
      window_steps += 1
      if done % options.log_every == 0 or done == total_steps:
        clips_per_sec = window_steps * options.batch_size / (time.perf_counter() - window_start)
        log({"step": done, "epoch": done / steps_per_epoch, "clips_per_sec": clips_per_sec,
             **{k: float(v) for k, v in metrics.items() if k not in ("finite", "stop")}})
        progress.set_postfix(loss=f"{float(metrics['loss']):.3f}")
        window_start, window_steps = time.perf_counter(), 0
      stop = bool(metrics["stop"])
      latest.save(done, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                data=grain.checkpoint.CheckpointSave(iterator)),
                  force=stop or done == total_steps)
      if stop:
        raise Preempted(f"SIGTERM: every process saved step {done} in {latest.directory}; relaunch to resume")
      if "val" in evaluators and done % eval_every == 0 and done < total_steps:
        evaluate("val", done, state.params)
    final = {name: evaluate(name, total_steps, state.params) for name in evaluators}
    best_step = best.best_step() if best else None
  finally:
    # A handler installed outside Python (jax.distributed's preemption notifier) reads as None.
    signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_handler is None else previous_handler)
    iterator.close()
    latest.close()
    if best:
      best.close()
  return {"params": jax.device_get(checkpoint_layout(state.params)), "test": final.get("test"), "val": final.get("val"),
          "best_step": best_step, "train_clips_per_sec": clips_per_sec,
          "steps": total_steps, "history": log.history}


def fit_classifier(*, model_config: ModelConfig, params, splits, config, seed: int, workdir, pipelines) -> dict:
  """`fit` for video classification: cross-entropy on `splits.train`, WAR on `splits.val` (chooses
  `best/`) and `splits.test` (`data.sources.Splits`); compute dtype `train.dtype`, block layout
  `train.scan_blocks` (default True)."""
  mesh = make_mesh()
  model = VideoMAE(model_config, dtype=jnp.dtype(config.train.dtype), scan_blocks=scans_blocks(config))
  num_classes = len(splits.names)
  evaluators = {name: classification_evaluator(mesh, model, source, pipelines, num_classes, name)
                for name, source in (("val", splits.val), ("test", splits.test)) if source is not None}
  loss_fn = classification_loss(model, num_classes, TrainOptions.from_config(config.train))
  return fit(params=params, loss_fn=loss_fn, depth=model_config.depth, train_source=splits.train,
             evaluators=evaluators, config=config, seed=seed, workdir=workdir, pipelines=pipelines)
