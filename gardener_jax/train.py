"""Data-parallel finetuning and evaluation over every device of a host or a pod.

The step is written per device, pmap-style: each device computes gradients on its shard of the
global batch and `lax.pmean` averages them over the 'data' mesh axis; `jax.shard_map` under
`jax.jit` runs it. Parameters and optimiser state are replicated, the batch is sharded. Each
process feeds its own shard of the data (`input_pipeline` reads disjoint shards).

Checkpoints (orbax CheckpointManager): the latest every `checkpoint_every` steps and the best by
eval WAR. A relaunched run restores the latest state and restarts the input pipeline at the same
example, so it reaches the params of a run never stopped. SIGTERM saves, then exits; a NaN or inf
loss stops the run with a clear message and keeps the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gardener_jax import optim as optim_lib
from gardener_jax.models import ModelConfig, VideoMAE

AXIS = "data"


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


class NonFiniteLoss(RuntimeError):
  pass


class Preempted(SystemExit):
  """Raised after SIGTERM once the state is saved."""


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), (AXIS,))


def global_batch(mesh, local: dict) -> dict:
  """This process's numpy batch → global arrays sharded along the batch axis over every device."""
  sharding = NamedSharding(mesh, P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def _train_step(state: TrainState, batch, rng, *, model: VideoMAE, tx, schedule, train, num_classes):
  rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(AXIS))
  mix_rng, dropout_rng = jax.random.split(rng)
  clips = batch["clips"].astype(model.dtype)
  targets = optim_lib.soft_targets(batch["label"], num_classes, train.label_smoothing)
  clips, targets = optim_lib.mix(mix_rng, clips, targets, train.mixup_alpha, train.cutmix_alpha)

  def loss_fn(params):
    logits = model.apply({"params": params}, clips, train=True, rngs={"dropout": dropout_rng})
    loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
    if train.inject_nan_at_step >= 0:  # a testing hook: the stop on a non-finite loss must be reachable
      loss = jnp.where(state.step == train.inject_nan_at_step, jnp.nan, loss)
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": jax.lax.pmean(loss, AXIS),
             "accuracy": jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == batch["label"]), AXIS),
             "grad_norm": optax.tree.norm(grads)}
  count = state.step // max(1, train.accumulate)
  metrics["lr"] = schedule(count)
  return TrainState(state.step + 1, params, opt_state), metrics


def _eval_step(params, batch, *, model: VideoMAE):
  clips = batch["clips"]  # (b, views, T, H, W, C)
  b, views = clips.shape[:2]
  logits = model.apply({"params": params}, clips.reshape(b * views, *clips.shape[2:]).astype(model.dtype))
  return jax.nn.softmax(logits.astype(jnp.float32)).reshape(b, views, -1).mean(axis=1)


def compile_steps(mesh, model: VideoMAE, tx, schedule, train, num_classes):
  train_step = functools.partial(_train_step, model=model, tx=tx, schedule=schedule, train=train,
                                 num_classes=num_classes)
  train_fn = jax.jit(jax.shard_map(train_step, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()),
                                   check_vma=False), donate_argnums=0)
  eval_fn = jax.jit(jax.shard_map(functools.partial(_eval_step, model=model), mesh=mesh, in_specs=(P(), P(AXIS)),
                                  out_specs=P(AXIS)))
  return train_fn, eval_fn


def init_state(params, tx) -> TrainState:
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


def video_metrics(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """WAR (accuracy over videos), UAR (mean per-class recall), top-1 and top-5, in %."""
  top = np.argsort(-probabilities, axis=1)
  correct = top[:, 0] == labels
  recalls = [correct[labels == c].mean() for c in range(num_classes) if np.any(labels == c)]

  def percent(hits):  # 100 · count / n: 51 of 80 is 63.75, not 63.749999…
    return 100 * int(np.sum(hits)) / len(hits)

  top5 = np.any(top[:, :5] == labels[:, None], axis=1)
  return {"war": percent(correct), "uar": 100 * float(np.mean(recalls)), "top1": percent(correct), "top5": percent(top5),
          "videos": int(len(labels))}


def evaluate(eval_fn, params, mesh, pipeline, num_classes: int) -> dict:
  """Runs every eval batch (padded to the device count), averaging clip × crop views per video."""
  local_devices = jax.local_device_count()
  probabilities, labels, seen = {}, {}, 0
  start = time.perf_counter()
  for batch in pipeline:
    size = len(batch["label"])
    padded = -size % local_devices
    if padded:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], padded, axis=0)]) for k, v in batch.items()}
    out = multihost_utils.process_allgather(eval_fn(params, global_batch(mesh, {"clips": batch["clips"]})), tiled=True)
    ids = multihost_utils.process_allgather(np.asarray(batch["video_index"]), tiled=True)
    y = multihost_utils.process_allgather(np.asarray(batch["label"]), tiled=True)
    for p, i, label in zip(np.asarray(out), np.asarray(ids), np.asarray(y)):
      probabilities[int(i)], labels[int(i)] = p, int(label)
    seen += size * batch["clips"].shape[1]
  order = sorted(probabilities)
  metrics = video_metrics(np.stack([probabilities[i] for i in order]), np.array([labels[i] for i in order]),
                          num_classes)
  metrics["clips_per_sec"] = seen / max(time.perf_counter() - start, 1e-9)
  return metrics


@dataclasses.dataclass
class _SigtermFlag:
  raised: bool = False

  def __call__(self, signum, frame):
    self.raised = True


def fit(*, model_config: ModelConfig, params, train_source, eval_source, num_classes: int, config, workdir,
        pipelines) -> dict:
  """Finetunes `params` on `train_source`; returns the final eval metrics and throughput.

  `config` carries `train` (batch_size, epochs, dtype and the `TrainOptions` fields) and `optim`
  (see `optim.make_optimizer`); `pipelines` builds the train and eval pipelines.
  """
  from tqdm import tqdm

  train_cfg = config.train
  workdir = pathlib.Path(workdir)
  mesh = make_mesh()
  if train_cfg.batch_size % jax.device_count():
    raise ValueError(f"train.batch_size {train_cfg.batch_size} is not a multiple of the {jax.device_count()} devices")
  local_batch = train_cfg.batch_size // jax.process_count()
  steps_per_epoch = max(1, len(train_source) // train_cfg.batch_size)
  total_steps = steps_per_epoch * train_cfg.epochs
  dtype = jnp.dtype(train_cfg.dtype)
  model = VideoMAE(model_config, dtype=dtype)
  tx, schedule = optim_lib.make_optimizer(config.optim, params, model_config.depth,
                                          total_steps // max(1, config.optim.accumulate))
  options = dataclasses.replace(TrainOptions.from_config(train_cfg), accumulate=config.optim.accumulate)
  train_fn, eval_fn = compile_steps(mesh, model, tx, schedule, options, num_classes)
  replicated = NamedSharding(mesh, P())
  state = jax.device_put(init_state(params, tx), replicated)

  latest = ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=ocp.CheckpointManagerOptions(
      max_to_keep=1, save_interval_steps=options.checkpoint_every, enable_async_checkpointing=False))
  best = ocp.CheckpointManager((workdir / "best").absolute(), options=ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda m: m["war"], best_mode="max", enable_async_checkpointing=False))
  if latest.latest_step() is not None:
    state = latest.restore(latest.latest_step(), args=ocp.args.StandardRestore(jax.tree.map(
        ocp.utils.to_shape_dtype_struct, state)))
    logging.info("resumed from step %d in %s", int(state.step), workdir / "checkpoints")
  start_step = int(state.step)

  pipeline = pipelines.train(train_source, local_batch, start_index=start_step * local_batch)
  rng = jax.random.key(options.seed)
  flag = _SigtermFlag()
  previous = signal.signal(signal.SIGTERM, flag)
  metrics_file = (workdir / "metrics.jsonl").open("a") if jax.process_index() == 0 else open(os.devnull, "w")
  history, eval_metrics, clips_per_sec = [], {}, 0.0

  def log(record: dict) -> None:
    history.append(record)
    metrics_file.write(json.dumps(record) + "\n")
    metrics_file.flush()

  try:
    iterator = iter(pipeline)
    progress = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps, desc="finetune",
                    disable=jax.process_index() != 0, mininterval=2)
    window_start, window_steps = time.perf_counter(), 0
    for step in progress:
      state, step_metrics = train_fn(state, global_batch(mesh, next(iterator)), rng)
      loss = float(step_metrics["loss"])
      if not np.isfinite(loss):
        kept = latest.latest_step()
        raise NonFiniteLoss(f"loss is {loss} at step {step + 1}: stopping. The last good checkpoint "
                            f"({'step ' + str(kept) if kept is not None else 'none yet'}) is kept in "
                            f"{workdir / 'checkpoints'}; lower optim.lr or enable optim.clip_norm")
      window_steps += 1
      done = step + 1
      if done % options.log_every == 0 or done == total_steps:
        clips_per_sec = window_steps * options.batch_size / (time.perf_counter() - window_start)
        log({"step": done, "epoch": done / steps_per_epoch, "clips_per_sec": clips_per_sec,
             **{k: float(v) for k, v in step_metrics.items()}})
        progress.set_postfix(loss=f"{loss:.3f}", acc=f"{float(step_metrics['accuracy']):.2f}")
        window_start, window_steps = time.perf_counter(), 0
      latest.save(done, args=ocp.args.StandardSave(state), force=flag.raised or done == total_steps)
      if flag.raised:
        latest.wait_until_finished()
        raise Preempted(f"SIGTERM at step {done}: state saved in {workdir / 'checkpoints'}; relaunch to resume")
      if eval_source is not None and done % (steps_per_epoch * options.eval_every_epochs) == 0:
        eval_metrics = evaluate(eval_fn, state.params, mesh, pipelines.eval(eval_source), num_classes)
        log({"step": done, "epoch": done / steps_per_epoch, **{f"eval_{k}": v for k, v in eval_metrics.items()}})
        best.save(done, args=ocp.args.StandardSave(state.params), metrics=eval_metrics)
  finally:
    signal.signal(signal.SIGTERM, previous)
    metrics_file.close()
    latest.wait_until_finished()
    latest.close()
    best.close()
  if eval_source is not None and not eval_metrics:
    eval_metrics = evaluate(eval_fn, state.params, mesh, pipelines.eval(eval_source), num_classes)
  return {"params": jax.device_get(state.params), "eval": eval_metrics, "train_clips_per_sec": clips_per_sec,
          "steps": total_steps, "history": history}


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """A hashable view of `config.train` (the compiled step takes it as a static argument)."""

  label_smoothing: float = 0.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  inject_nan_at_step: int = -1
  accumulate: int = 1
  seed: int = 0
  checkpoint_every: int = 100
  log_every: int = 10
  eval_every_epochs: int = 1
  batch_size: int = 8

  @classmethod
  def from_config(cls, train) -> TrainOptions:
    return cls(**{f.name: train[f.name] for f in dataclasses.fields(cls) if f.name in train})
