"""One of several local processes joined by jax.distributed, as the hosts of a pod would be.

  python tests/multihost_worker.py train PROCESS_ID NUM_PROCESSES PORT DATA_DIR WORKDIR OUT.{}.npz [per_block]
      [hold_checkpoint=STEP]
  python tests/multihost_worker.py eval PROCESS_ID NUM_PROCESSES PORT DATA_DIR OUT.{}.json NUM_VIDEOS CORRUPT_INDEX
      [interleaved]
  python tests/multihost_worker.py prepare PROCESS_ID NUM_PROCESSES PORT DATA_DIR OUT.{}.json
  python tests/multihost_worker.py primary PROCESS_ID NUM_PROCESSES PORT CHECKPOINT_DIR OUT.{}.json

`train` finetunes a tiny VideoMAE on the tiny synthetic set for 12 steps (checkpoints every 2, the
test split evaluated at the end) and writes the final params; with `per_block` it trains one parameter
subtree per block (`train.scan_blocks = False`) instead of the stacked, scanned blocks; with
`hold_checkpoint=STEP` the checkpoint of STEP is never committed (its temporary directory stays), so a
test can kill the processes while it is being written without racing orbax's rename. `eval`
evaluates fixed random params on the first NUM_VIDEOS training videos, the one at CORRUPT_INDEX made
unreadable; with `interleaved` the mesh alternates processes along its axis (process 0's first device,
process 1's first, ..., process 0's second, ...), as `jax.make_mesh` lays a TPU pod's chips out, instead
of `make_mesh`'s process-major order here. `prepare` builds the tiny synthetic set into DATA_DIR as a job
starts (`sources.prepare`) and writes the number of training videos it then opens. `primary` saves
random params, jax.Arrays on each process's device, as a checkpoint (process 0 writes it), reads it back,
then has process 0 fail inside `on_primary`, and writes what each process saw. '{}' in an output path
becomes the process id. With NUM_PROCESSES 0 the process runs alone, without jax.distributed.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from tests.train_setup import MODEL, SPEC, corrupted, fit_config, splits  # noqa: E402


def _join(process_id: int, num_processes: int, port: int) -> None:
  if num_processes:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                               process_id=process_id)
    assert jax.process_count() == num_processes


def _hold_checkpoint(step: str) -> None:
  """orbax never commits checkpoint `step`: the rename of its temporary directory waits forever."""
  import asyncio

  from orbax.checkpoint._src.path import atomicity

  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def held(self):
    if self._final_path.name == step:
      await asyncio.Event().wait()
    await finalize(self)

  atomicity.AtomicRenameTemporaryPath.finalize = held


def train(data_dir: str, workdir: str, out: str, *options: str) -> None:
  import numpy as np

  from gardener_jax import train as train_lib
  from gardener_jax.data import input_pipeline
  from gardener_jax.models import init_params

  for option in options:
    if option.startswith("hold_checkpoint="):
      _hold_checkpoint(option.split("=")[1])
  result = train_lib.fit_classifier(model_config=MODEL, params=init_params(MODEL), splits=splits(data_dir),
                                    config=fit_config(scan_blocks="per_block" not in options), seed=0, workdir=workdir,
                                    pipelines=input_pipeline.Pipelines(SPEC, SPEC, seed=0))
  leaves = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(result["params"])}
  np.savez(out, war=result["test"]["war"], videos=result["test"]["videos"], **leaves)


def _interleaved_mesh() -> jax.sharding.Mesh:
  import numpy as np

  by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(jax.process_count())]
  return jax.sharding.Mesh(np.array([d for devices in zip(*by_process) for d in devices]), ("data",))


def evaluate(data_dir: str, out: str, num_videos: int, corrupt_index: int, *options: str) -> None:
  from gardener_jax.data import input_pipeline, sources
  from gardener_jax.evaluate import classification_evaluator
  from gardener_jax.models import VideoMAE, init_params
  from gardener_jax.sharding import make_mesh

  train_split = sources.open_split(data_dir, "synthetic_motion", "train")[0]
  source = corrupted([train_split[i] for i in range(num_videos)], corrupt_index)
  pipelines = input_pipeline.Pipelines(SPEC, SPEC, seed=0, eval_batch_size=4)
  mesh = _interleaved_mesh() if "interleaved" in options else make_mesh()
  evaluator = classification_evaluator(mesh, VideoMAE(MODEL), source, pipelines, MODEL.num_classes, "test")
  metrics = evaluator(init_params(MODEL, 7))
  pathlib.Path(out).write_text(json.dumps({**metrics, "steps": evaluator.steps}))


def prepare(data_dir: str, out: str) -> None:
  import ml_collections

  from gardener_jax.data import sources

  data = ml_collections.ConfigDict(dict(name="synthetic_motion", config="tiny", data_dir=data_dir, manual_dir=""))
  sources.prepare(data)
  train_split = sources.open_split(data_dir, "synthetic_motion", "train", "tiny")[0]
  pathlib.Path(out).write_text(json.dumps({"train_videos": len(train_split)}))


def primary(directory: str, out: str) -> None:
  import numpy as np

  from gardener_jax.checkpoint import load_tree, save_checkpoint
  from gardener_jax.models import init_params
  from gardener_jax.sharding import on_primary

  params = init_params(MODEL, 3)
  save_checkpoint(directory, params, MODEL)
  loaded = load_tree(directory)["params"]
  same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded), strict=True))
  try:
    on_primary("fails on process 0", lambda: 1 / 0)
    raised = None
  except Exception as e:  # noqa: BLE001
    raised = f"{type(e).__name__}: {e}"
  pathlib.Path(out).write_text(json.dumps({"same": same, "raised": raised}))


def main(mode: str, process_id: str, num_processes: str, port: str, *args: str) -> None:
  _join(int(process_id), int(num_processes), int(port))
  args = [a.format(process_id) for a in args]  # OUT paths name the process: out.{}.npz
  if mode == "train":
    train(*args)
  elif mode == "prepare":
    prepare(*args)
  elif mode == "primary":
    primary(*args)
  else:
    data_dir, out, num_videos, corrupt_index, *options = args
    evaluate(data_dir, out, int(num_videos), int(corrupt_index), *options)


if __name__ == "__main__":
  main(*sys.argv[1:])
