"""The paths a pod takes, with several local processes joined by jax.distributed: evaluation over uneven
shards holding an unreadable video, SIGTERM reaching one process only, and SIGKILL at any step,
also while a checkpoint is being written. Each process runs tests/multihost_worker.py."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from gardener_jax.data import builders, input_pipeline, sources
from gardener_jax.evaluate import classification_evaluator
from gardener_jax.models import VideoMAE, init_params
from gardener_jax.sharding import make_mesh
from tests.train_setup import MODEL, SPEC, corrupted

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
TOTAL_STEPS = 12


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


class _Group:
  """`n` worker processes of one jax.distributed job; each one's stderr goes to a file."""

  def __init__(self, tmp_path: pathlib.Path, mode: str, n: int, *args, name: str, devices: int = 1):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    port = _free_port()
    self.logs = [tmp_path / f"{name}.{i}.log" for i in range(n)]
    self.procs = []
    for i, log in enumerate(self.logs):
      with log.open("w") as stderr:
        self.procs.append(subprocess.Popen([sys.executable, str(WORKER), mode, str(i), str(n), str(port),
                                            *map(str, args)], env=env, stdout=subprocess.DEVNULL, stderr=stderr))

  def wait(self, timeout=120) -> list[tuple[int, str]]:
    """Each process's exit code and log; processes still running after `timeout` seconds (a hang in a
    collective) are killed and fail the test."""
    deadline = time.monotonic() + timeout
    try:
      codes = [p.wait(timeout=max(0.0, deadline - time.monotonic())) for p in self.procs]
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"the processes hung for {timeout} s; last log lines:\n"
                  + "\n".join(log.read_text()[-1500:] for log in self.logs))
    return [(code, log.read_text()) for code, log in zip(codes, self.logs)]

  def kill(self) -> None:
    for p in self.procs:
      p.send_signal(signal.SIGKILL)
    for p in self.procs:
      p.wait()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  builders.build("synthetic_motion", path, "tiny")
  return path


# --- evaluation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("processes,devices,videos,corrupt,mesh", [
    (2, 1, 7, 3, "process_major"), (3, 1, 11, 4, "process_major"), (2, 2, 7, 5, "interleaved")])
def test_uneven_shards_with_an_unreadable_video_evaluate_like_one_process(data_dir, tmp_path, processes, devices,
                                                                          videos, corrupt, mesh):
  """Also on a mesh that alternates the processes along its axis, as TPU pods' meshes do: each output
  must still meet its own video's label and validity flag."""
  outs = [tmp_path / f"metrics{i}.json" for i in range(processes)]
  options = ("interleaved",) if mesh == "interleaved" else ()
  group = _Group(tmp_path, "eval", processes, data_dir, tmp_path / "metrics{}.json", videos, corrupt, *options,
                 name="eval", devices=devices)
  for code, log in group.wait():
    assert code == 0, log[-3000:]
  results = [json.loads(out.read_text()) for out in outs]
  for r in results:
    r.pop("clips_per_sec")
  assert all(r == results[0] for r in results[1:]), results  # every process computes the same metrics
  shards = [input_pipeline.shard_size(videos, i, processes) for i in range(processes)]
  assert len(set(shards)) > 1 and results[0]["steps"] == 2  # uneven shards, padded to the same number of steps

  train_split = sources.open_split(data_dir, "synthetic_motion", "train")[0]
  readable = [train_split[i] for i in range(videos) if i != corrupt]
  pipelines = input_pipeline.Pipelines(SPEC, SPEC, seed=0, eval_batch_size=4)
  params = init_params(MODEL, 7)

  def evaluate(source):
    return classification_evaluator(make_mesh(), VideoMAE(MODEL), source, pipelines, MODEL.num_classes, "test")(params)

  single = evaluate(readable)
  keys = ("war", "uar", "top1", "top5", "videos")
  assert {k: results[0][k] for k in keys} == {k: single[k] for k in keys}
  assert results[0]["videos"] == videos - 1 and results[0]["skipped"] == 1 and single["skipped"] == 0

  # the same unreadable video, alone: counted as skipped, not as a wrong answer
  alone = evaluate(corrupted([train_split[i] for i in range(videos)], corrupt))
  assert {k: alone[k] for k in keys} == {k: single[k] for k in keys} and alone["skipped"] == 1


# --- data: every process starts a job on a data_dir it shares -------------------------------------

def test_processes_sharing_a_data_dir_build_the_dataset_once(tmp_path):
  data_dir = tmp_path / "shared"
  _finished(_Group(tmp_path, "prepare", 3, data_dir, tmp_path / "prepared.{}.json", name="prepare"))
  assert [json.loads((tmp_path / f"prepared.{i}.json").read_text()) for i in range(3)] == [{"train_videos": 16}] * 3
  assert [p.name for p in (data_dir / "synthetic_motion" / "tiny").iterdir()] == ["1.1.0"]  # one build, no leftovers


def test_process_0_saves_jax_arrays_and_its_failure_reaches_every_process(tmp_path):
  group = _Group(tmp_path, "primary", 2, tmp_path / "checkpoint", tmp_path / "seen.{}.json", name="primary")
  _finished(group)  # quickly: no process waits at a barrier for one that stopped
  seen = [json.loads((tmp_path / f"seen.{i}.json").read_text()) for i in range(2)]
  assert [s["same"] for s in seen] == [True, True]
  assert seen[0]["raised"] == "ZeroDivisionError: division by zero"
  assert seen[1]["raised"] == "RuntimeError: fails on process 0: process 0 failed (its log says why)"


# --- training: preemption and kills ----------------------------------------------------------------

def _params(tmp_path, name: str) -> dict:
  first, second = (dict(np.load(str(tmp_path / f"{name}.{i}.npz"))) for i in range(2))
  for key in first:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)  # one model, replicated
  return first


def _finished(group: _Group) -> None:
  for code, log in group.wait():
    assert code == 0, log[-3000:]


def _wait_for(condition, timeout=120.0) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      raise TimeoutError("the run did not reach the point to interrupt it")
    time.sleep(0.001)


def _logged_steps(workdir: pathlib.Path) -> int:
  path = workdir / "metrics.jsonl"
  return path.read_text().count('"loss"') if path.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("uninterrupted")
  _finished(_Group(tmp_path, "train", 2, data_dir, tmp_path / "work", tmp_path / "run.{}.npz", name="run"))
  params = _params(tmp_path, "run")
  assert int(params["videos"]) == 8  # every test video, each once
  return params


def _relaunch_equals(data_dir, tmp_path, workdir, uninterrupted, *layout: str) -> None:
  """A relaunch finishes the run, logs every step once and ends with the uninterrupted run's params:
  bit for bit in the same layout; per block (a different program) within 1e-5 of the scanned run."""
  _finished(_Group(tmp_path, "train", 2, data_dir, workdir, tmp_path / "again.{}.npz", *layout, name="again"))
  resumed = _params(tmp_path, "again")
  assert sorted(resumed) == sorted(uninterrupted)
  for key in uninterrupted:
    np.testing.assert_allclose(resumed[key], uninterrupted[key], atol=1e-5 if layout else 0, rtol=0, err_msg=key)
  logged = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]
  assert logged == list(range(1, TOTAL_STEPS + 1))


@pytest.mark.parametrize("layout", [(), ("per_block",)], ids=["scanned", "per_block"])
def test_sigterm_to_one_process_stops_every_process_at_the_same_step(data_dir, tmp_path, uninterrupted, layout):
  workdir = tmp_path / "work"
  group = _Group(tmp_path, "train", 2, data_dir, workdir, tmp_path / "run.{}.npz", *layout, name="run")
  _wait_for(lambda: _logged_steps(workdir) >= 3)
  group.procs[1].send_signal(signal.SIGTERM)  # the second host only
  saved = []
  for code, log in group.wait():
    match = re.search(r"SIGTERM: every process saved step (\d+)", log)
    assert code != 0 and match, log[-3000:]
    saved.append(int(match[1]))
  assert saved[0] == saved[1] and 3 <= saved[0] < TOTAL_STEPS
  step_dir = workdir / "checkpoints" / str(saved[0])
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(saved[0])]
  assert sorted(p.name for p in (step_dir / "data").glob("process_*")) == [
      "process_0-of-2.json", "process_1-of-2.json"]  # each process's place in its input stream
  with ocp.StandardCheckpointer() as checkpointer:
    saved_blocks = checkpointer.metadata(step_dir.absolute() / "state").item_metadata["params"]["blocks"]
  assert sorted(saved_blocks) == (["0", "1"] if layout else ["attn", "mlp", "norm1", "norm2"])
  _relaunch_equals(data_dir, tmp_path, workdir, uninterrupted, *layout)


@pytest.mark.parametrize("moment", ["after_step_5", "while_a_checkpoint_is_written"])
def test_sigkill_of_every_process_resumes_from_the_last_complete_checkpoint(data_dir, tmp_path, uninterrupted,
                                                                            moment):
  workdir = tmp_path / "work"
  checkpoints = workdir / "checkpoints"
  held = ("hold_checkpoint=6",) if moment == "while_a_checkpoint_is_written" else ()
  group = _Group(tmp_path, "train", 2, data_dir, workdir, tmp_path / "run.{}.npz", *held, name="run")
  if held:  # step 6's checkpoint is written but never committed: it stays half-done until the kill
    _wait_for(lambda: checkpoints.is_dir() and any(p.name.startswith("6.orbax-checkpoint-tmp")
                                                   for p in os.scandir(checkpoints)))
  else:
    _wait_for(lambda: _logged_steps(workdir) >= 5)
  group.kill()
  if held:
    assert sorted(p.name for p in checkpoints.iterdir() if "orbax-checkpoint-tmp" not in p.name) == ["4"]
  _relaunch_equals(data_dir, tmp_path, workdir, uninterrupted)
