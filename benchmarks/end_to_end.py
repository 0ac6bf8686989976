"""Finetuning throughput with the real input pipeline against the step alone, at a job config's sizes
(default: the embedded demo's finetuning stage, its encoder pruned to --depth blocks), in one run.

  python benchmarks/end_to_end.py [--config configs/demo.py] [--depth 3] [--steps 40] [--rounds 5] [--workers N]

Rows, each the loop's own step (`train.compile_train_step` at `train.dtype`, metrics read back every
step as `fit` does):
- the step alone, on one batch of uint8 clips already on the devices;
- the loop as it runs: the grain pipeline, `DevicePrefetch` (a thread reads the next batches and starts
  their copy to the devices while the step runs; it and grain's threads run at `data.input_nice`), the step;
- the same with the input threads at the process's own priority (niceness 0);
- the same without `DevicePrefetch`: the main thread takes each batch from grain (whose own threads
  read ahead), copies it, then runs the step;
- the pipeline alone, no step: what its clips cost in CPU time.
Each round times every row for --steps steps, in turn, after --warmup steps that empty what its
pipeline read ahead while other rows ran; the table gives each row's median over the rounds (this
machine's speed drifts over minutes, so rows measured minutes apart do not compare). The ratio is each
row's clips per second over the step alone's; "cores busy" is the process's CPU time over the wall time.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks.common import batch_rate, machine, print_table  # noqa: E402
from gardener_jax import optim, train  # noqa: E402
from gardener_jax.data import input_pipeline, sources  # noqa: E402
from gardener_jax.models import ModelConfig, VideoMAE, init_params  # noqa: E402
from gardener_jax.sharding import global_batch, make_mesh, replicated  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "job config (a configs/*.py file)")
_DEPTH = flags.DEFINE_integer("depth", 3, "encoder blocks (the demo finetunes 3 of 6)", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 40, "timed steps per row and round", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "rounds over the rows; medians reported", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 10, "untimed steps before each row in each round (compilation, "
                               "workers starting, batches read ahead)")
_WORKERS = flags.DEFINE_integer("workers", None, "grain worker processes; default data.workers of the config")


def main(_):
  config = _CONFIG.value
  workers = config.data.workers if _WORKERS.value is None else _WORKERS.value
  splits = sources.from_config(config.data, config.data.classes, config.seed)
  model_config = ModelConfig.from_job(config.model, config.data, num_classes=len(splits.names)).replace(
      depth=_DEPTH.value)
  batch_size = config.train.batch_size
  mesh = make_mesh()
  dtype = jnp.dtype(config.train.get("dtype", "float32"))
  model = VideoMAE(model_config, dtype=dtype)
  loss_fn = train.classification_loss(model, model_config.num_classes, train.TrainOptions.from_config(config.train))
  params = init_params(model_config, config.seed)
  tx, schedule = optim.make_optimizer(config.optim, params, model_config.depth, 10_000)
  compiled = train.compile_train_step(mesh, loss_fn, tx, schedule, config.optim.accumulate,
                                      train.step_compiler_options(config))
  votes = global_batch(mesh, {"votes": np.zeros(jax.local_device_count(), np.int32)})["votes"]
  state = jax.device_put(train.init_state(params, tx), replicated(mesh))

  def step(batch):  # as `fit` does: the metrics read back every step
    nonlocal state
    state, metrics = compiled(state, batch, jax.random.key(0), votes)
    jax.device_get(metrics)

  pipelines = dataclasses.replace(input_pipeline.pipelines_from_config(config.data, config.seed), workers=workers)
  put = functools.partial(global_batch, mesh)

  def pipeline_batches():
    return iter(pipelines.train(splits.train, batch_size // jax.process_count()))

  resident = put(next(pipeline_batches()))
  alone_row = "step alone (one batch already on the devices)"
  loop_row = f"grain pipeline → DevicePrefetch → step (the loop; input at niceness {pipelines.input_nice})"
  rows = {  # name → (batches, consume)
      alone_row: (itertools.repeat(resident), step),
      loop_row: (input_pipeline.DevicePrefetch(pipeline_batches(), put, nice=pipelines.input_nice), step),
      "the loop, input at the process's priority (niceness 0)":
          (input_pipeline.DevicePrefetch(pipeline_batches(), put), step),
      "grain pipeline → copy → step, without DevicePrefetch": (map(put, pipeline_batches()), step),
      "grain pipeline alone, no step": (pipeline_batches(), None),
  }
  rounds = {name: [] for name in rows}
  for _ in range(_ROUNDS.value):
    for name, (batches, consume) in rows.items():
      rounds[name].append(batch_rate(batches, _STEPS.value, _WARMUP.value, consume))
  for batches, _ in rows.values():
    if isinstance(batches, input_pipeline.DevicePrefetch):
      batches.close()
  rates = {name: [statistics.median(getattr(r, field) for r in runs) for field in ("clips_per_sec", "cores_busy")]
           for name, runs in rounds.items()}
  alone = rates[alone_row][0]
  spec = pipelines.train_spec
  print_table(f"Finetuning clips / s, depth {model_config.depth}, width {model_config.width}, "
              f"{spec.num_frames} × {spec.image_size}², batch {batch_size}, {dtype.name}, {workers} grain workers, "
              f"{jax.device_count()} {jax.devices()[0].platform} device(s); medians of {_ROUNDS.value} rounds of "
              f"{_STEPS.value} steps per row, each after {_WARMUP.value}; {machine()}",
              ["", "clips / s", "ratio to the step alone", "cores busy", "CPU ms / clip"],
              [[name, rate, rate / alone, cores, 1e3 * cores / rate] for name, (rate, cores) in rates.items()])
  ratios = [looped.clips_per_sec / stepped.clips_per_sec
            for looped, stepped in zip(rounds[loop_row], rounds[alone_row])]
  print(f"the loop over the step alone, round by round: {', '.join(f'{r:.3f}' for r in ratios)}")


if __name__ == "__main__":
  app.run(main)
