"""Sweeps: every criterion × pruning level from one initial checkpoint, the oracle, and their results.

A sweep is a fixed, ordered plan of runs computed from the config alone, so run i is the same run in
every process (a cluster job array passes `--run_index i`). Run i lives in DIR/runs/<name>/ and ends
with DIR/runs/<name>/result.json, written atomically, status "ok" or "failed". A relaunch skips the
runs that ended "ok" (with the same training seed) and retries the rest; a failed run is recorded and
the sweep goes on.

The plan, in order:
  unpruned                  the initial model finetuned with nothing removed (the accuracy-drop baseline)
  single_b<l>               block l removed alone, l = 1 … L: the oracle's sensitivity (k = 1 schedule)
  <criterion>_k<k>[_s<s>]   every criterion at every level; random once per draw (its own seeds)
  oracle_k<k>               the k blocks whose single removal hurt least, all at once (SPEC §4)
  greedy_k<k>_c<c>          optional greedy oracle: step k adds the c-th still-kept block to the
                            best removed set of step k − 1 (step 1 is the best single removal)

With several training seeds (`sweep.seeds`) every run is trained once per seed, named with `_t<seed>`
right after it; the seed sets the head's init, the data order, dropout and drop path. Random's draws
are crossed with the training seeds (every draw trained with every seed). The oracle and the greedy
oracle choose by the single removals' (and candidates') mean WAR over the seeds.

Runs that remove the same blocks with the same schedule and training seed train identical models: a
run whose training matches a finished one copies its result ("reused_from") instead of training again.

Every result records the digest of the settings it was made under (`Sweep.settings`: the config but for the
fields that only list the runs or do not change a result). A result of other settings is stale: the sweep
neither reports nor reuses it, and a run's directory left by an attempt under other settings is emptied
before the run trains again, so a changed config never mixes with what an earlier one trained.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import shutil
import time
import traceback
from typing import Callable, Sequence

import numpy as np
from absl import logging

from gardener_jax import criteria, pipeline
from gardener_jax.checkpoint import load_tree, read_config
from gardener_jax.files import write_json
from gardener_jax.sharding import on_primary

BASELINE, SINGLE, ORACLE, GREEDY = "unpruned", "oracle_single", "oracle", "oracle_greedy"
RESULT_FILE = "result.json"
RANKINGS_FILE = "rankings.json"  # every criterion's ranking but the oracle's, scored once by --prepare
ATTEMPT_FILE = "attempt.json"  # in a run's directory: the settings and training key of what it holds
# Config fields that change which runs a sweep has, or how fast they go, but no run's result.
NOT_IN_SETTINGS = ("sweep.criteria", "sweep.levels", "sweep.random_seeds", "sweep.seeds", "sweep.baseline",
                   "sweep.greedy", "sweep.keep_checkpoints", "data.workers", "data.input_nice", "data.eval_batch_size",
                   "train.log_every", "train.checkpoint_every")


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  criterion: str  # a registered criterion, BASELINE, SINGLE or GREEDY
  k: int  # blocks removed
  draw: int = 0  # the random criterion's permutation seed
  block: int = 0  # SINGLE: the block removed; GREEDY: the candidate's position among the kept blocks
  seed: int = 0  # the training seed


class Pending(RuntimeError):
  """A run's removed set depends on runs that have not finished."""


def training_seeds(config) -> list[int]:
  """`sweep.seeds`, or the config's one seed."""
  return [int(s) for s in config.sweep.get("seeds") or (config.seed,)]


def plan(sweep, blocks: Sequence[int], seeds: Sequence[int] = (0,)) -> list[Run]:
  """The runs of `sweep` on a model holding `blocks` (1-based ids of the original model: `kept_blocks`)."""
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"sweep.seeds {list(seeds)}: give one or more distinct training seeds")
  for field in ("criteria", "levels", "random_seeds"):
    if len(set(values := list(sweep.get(field, ())))) != len(values):
      raise ValueError(f"sweep.{field} {values}: each value once (a repeat would count one training twice)")
  depth = len(blocks)
  levels = [int(k) for k in sweep.levels]
  if bad := [k for k in levels if not 1 <= k <= depth - 1]:
    raise ValueError(f"sweep.levels {bad}: a level removes 1 to {depth - 1} of the {depth} blocks")
  for name in sweep.criteria:
    criteria.get(name)
  if len(sweep.epochs) < depth:
    raise ValueError(f"sweep.epochs has {len(sweep.epochs)} entries; it needs one per blocks removed, 0 … {depth - 1}")
  runs = [Run(BASELINE, BASELINE, 0)] if sweep.baseline else []
  if ORACLE in sweep.criteria or sweep.greedy:
    runs += [Run(f"single_b{b}", SINGLE, 1, block=b) for b in blocks]
  for name in sweep.criteria:
    if name != ORACLE:
      draws = list(sweep.random_seeds) if name == "random" else [0]
      runs += [Run(f"{name}_k{k}" + (f"_s{s}" if name == "random" else ""), name, k, s) for k in levels for s in draws]
  if ORACLE in sweep.criteria:
    runs += [Run(f"oracle_k{k}", ORACLE, k) for k in levels]
  if sweep.greedy:
    runs += [Run(f"greedy_k{k}_c{c}", GREEDY, k, block=c)
             for k in range(2, max(levels) + 1) for c in range(depth - k + 1)]
  suffix = len(seeds) > 1
  return [dataclasses.replace(run, name=f"{run.name}_t{t}" if suffix else run.name, seed=int(t))
          for run in runs for t in seeds]


TrainFn = Callable[..., dict]  # (config, workdir, initial=checkpoint) → pipeline.run's summary


class Sweep:
  """The plan of one sweep directory and what has finished in it."""

  def __init__(self, config, workdir, initial: pathlib.Path, train_fn: TrainFn = pipeline.run):
    self.config, self.dir, self.initial, self.train_fn = config, pathlib.Path(workdir), pathlib.Path(initial), train_fn
    self.model_config = read_config(initial)
    self.depth = self.model_config.depth
    self.seeds = training_seeds(config)
    self.runs = plan(config.sweep, self.model_config.kept_blocks, self.seeds)
    self._params = None
    self._rankings: dict = {}

  # --- what the runs remove --------------------------------------------------------------------------

  @functools.cached_property
  def calibration(self):
    """The data-based criteria's clips: from the training split of the sweep's data."""
    return pipeline.calibration_clips(self.config, self.model_config)

  @property
  def params(self):
    if self._params is None:
      self._params = load_tree(self.initial)["params"]
    return self._params

  def scored_criteria(self) -> list[tuple[str, int]]:
    """(criterion, seed) of every ranking the sweep reads but the oracle's: random once per seed."""
    return [(name, seed) for name in self.config.sweep.criteria if name != ORACLE
            for seed in (list(self.config.sweep.random_seeds) if name == "random" else [0])]

  def _ranking_settings(self) -> dict:
    data = self.config.get("data")
    return {"initial": str(self.initial), "discretize": str(self.config.prune.discretize),
            "seed": int(self.config.seed), "calibration_clips": int(self.config.prune.get("calibration_clips", 8)),
            "data": None if data is None else [data.name, data.config, list(data.classes)]}

  def _saved_rankings(self) -> dict:
    path = self.dir / RANKINGS_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    return saved.get("rankings", {}) if saved.get("settings") == self._ranking_settings() else {}

  def write_rankings(self) -> None:
    """Scores every criterion once and saves the rankings, so that every process and job-array task removes
    the same blocks (scores computed on different hosts could differ in their last bits and break a tie
    differently), and the tables need neither the weights nor the calibration clips again."""
    saved = self._saved_rankings()
    if all(f"{name}/{seed}" in saved for name, seed in self.scored_criteria()):
      return
    write_json(self.dir / RANKINGS_FILE, {"settings": self._ranking_settings(), "rankings": {
        f"{name}/{seed}": self.ranking(name, seed).to_dict() for name, seed in self.scored_criteria()}})

  def ranking(self, name: str, seed: int = 0) -> criteria.Ranking:
    if (name, seed) not in self._rankings:
      if saved := self._saved_rankings().get(f"{name}/{seed}"):
        self._rankings[name, seed] = criteria.Ranking.from_dict(saved)
      else:
        oracle = str(self.oracle_file()) if name == ORACLE else None
        clips = self.calibration if criteria.needs_data(name) else None
        self._rankings[name, seed] = criteria.rank(self.params, self.model_config, name,
                                                   self.config.prune.discretize, seed, oracle, clips)
    return self._rankings[name, seed]

  def single_accuracies(self) -> dict[int, dict[int, float]]:
    """block → training seed → WAR after removing the block alone; Pending until every single-block run
    has finished."""
    singles = [r for r in self.runs if r.criterion == SINGLE]
    if not singles:
      raise Pending("this sweep has no single-block runs: add 'oracle' to sweep.criteria")
    results = [(r, self.result(r)) for r in singles]
    if missing := [r.name for r, res in results if not _ok(res)]:
      raise Pending(f"the oracle needs every single-block run; not finished: {', '.join(missing)}")
    accuracies: dict[int, dict[int, float]] = {}
    for run, res in results:
      accuracies.setdefault(run.block, {})[run.seed] = res["war"]
    return accuracies

  def single_accuracy(self) -> dict[int, float]:
    """WAR after removing each block alone, the mean over the training seeds."""
    return {b: float(np.mean(list(by_seed.values()))) for b, by_seed in self.single_accuracies().items()}

  def oracle_file(self) -> pathlib.Path:
    """oracle.json, from the single-block runs' results (rewritten only where they changed)."""
    path = self.dir / "oracle.json"
    oracle = {"metric": "war", "accuracy": {str(b): a for b, a in self.single_accuracy().items()},
              "per_seed": {str(b): {str(t): a for t, a in by_seed.items()}
                           for b, by_seed in self.single_accuracies().items()}}
    if not path.is_file() or json.loads(path.read_text()) != oracle:
      write_json(path, oracle)
    return path

  def greedy_path(self, k: int) -> tuple[int, ...]:
    """The greedy oracle's removed set after k steps: the best finished candidate of each step."""
    if k == 1:
      accuracy = self.single_accuracy()
      return (criteria.removal_order(list(accuracy.values()), criteria.HIGHEST, list(accuracy))[0],)
    candidates = [r for r in self.runs if r.criterion == GREEDY and r.k == k]
    results = [self.result(r) for r in candidates]
    if missing := [r.name for r, res in zip(candidates, results) if not _ok(res)]:
      raise Pending(f"greedy step {k + 1} needs every step-{k} candidate; not finished: {', '.join(missing)}")
    by_added: dict[int, list] = {}  # a candidate removes step k − 1's set, then one block; one run per seed
    for res in results:
      by_added.setdefault(res["removal_order"][-1], []).append(res)
    added = list(by_added)
    mean_war = [float(np.mean([res["war"] for res in by_added[b]])) for b in added]
    best = criteria.removal_order(mean_war, criteria.HIGHEST, added)[0]
    return tuple(by_added[best][0]["removal_order"])

  def removal_order(self, run: Run) -> tuple[int, ...]:
    if run.criterion == BASELINE:
      return ()
    if run.criterion == SINGLE:
      return (run.block,)
    if run.criterion == GREEDY:
      path = self.greedy_path(run.k - 1)
      return path + ([b for b in self.model_config.kept_blocks if b not in path][run.block],)
    return tuple(self.ranking(run.criterion, run.draw).blocks_to_remove(run.k))

  # --- results ---------------------------------------------------------------------------------------

  @functools.cached_property
  def settings(self) -> str:
    """The digest of what the runs' removed sets and trainings depend on: the initial checkpoint and the config
    but for `NOT_IN_SETTINGS`."""
    config = self.config.copy_and_resolve_references().to_dict()
    for field in NOT_IN_SETTINGS:
      section, name = field.split(".")
      config.get(section, {}).pop(name, None)
    text = json.dumps({"initial": str(self.initial), "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

  def run_dir(self, run: Run) -> pathlib.Path:
    return self.dir / "runs" / run.name

  def result(self, run: Run) -> dict | None:
    path = self.run_dir(run) / RESULT_FILE
    if not path.is_file():
      return None
    record = json.loads(path.read_text())
    return record if record.get("settings") == self.settings else None  # stale: made under other settings

  def training_key(self, run: Run, removed) -> list:
    return [sorted(removed), int(self.config.sweep.epochs[run.k]), run.seed]

  def _finished_training(self, key) -> dict | None:
    for run in self.runs:
      result = self.result(run)
      if _ok(result) and result["training_key"] == key and not result.get("reused_from"):
        return result
    return None

  def _start_attempt(self, run: Run, key) -> None:
    """Empties the run's directory unless it holds an interrupted attempt at this very training (same
    settings and key, no result yet), which then resumes from its checkpoints; records this attempt."""
    directory, attempt = self.run_dir(run), {"settings": self.settings, "training_key": key}
    marker = directory / ATTEMPT_FILE
    interrupted = (marker.is_file() and json.loads(marker.read_text()) == attempt
                   and not (directory / RESULT_FILE).exists())
    if directory.exists() and not interrupted:
      shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(marker, attempt)

  def _train(self, run: Run, removed, key) -> dict:
    on_primary(f"start {run.name}", lambda: self._start_attempt(run, key))
    config = self.config.copy_and_resolve_references()
    with config.unlocked():
      config.prune.criterion = "explicit" if removed else "none"
      config.prune.blocks = ",".join(map(str, removed))
      config.train.epochs = int(config.sweep.epochs[run.k])
      config.seed = run.seed
    summary = self.train_fn(config, self.run_dir(run), initial=self.initial)
    if not self.config.sweep.keep_checkpoints:
      for path in ("final", "pruned/params", "finetune/checkpoints", "finetune/best"):
        shutil.rmtree(self.run_dir(run) / path, ignore_errors=True)
    return {**{k: summary["metrics"][k] for k in ("war", "uar", "top1", "top5")},
            "videos": summary["metrics"].get("videos"), "params": summary["params"], "gflops": summary["gflops"],
            "framework": summary.get("framework", "flax")}

  def execute(self, run: Run) -> dict:
    """Runs `run` unless it finished before; returns its result (also written to its result.json)."""
    if _ok(previous := self.result(run)) and previous["seed"] == run.seed:  # not from another seed's sweep
      return previous
    start = time.perf_counter()
    record = {"name": run.name, "criterion": run.criterion, "k": run.k, "ratio": run.k / self.depth, "seed": run.seed,
              "draw": run.draw, "settings": self.settings}
    try:
      order = self.removal_order(run)
      key = self.training_key(run, order)
      record.update(removal_order=list(order), removed_blocks=sorted(order), training_key=key,
                    epochs=int(self.config.sweep.epochs[run.k]))
      if same := self._finished_training(key):
        record.update({m: same[m] for m in ("war", "uar", "top1", "top5", "params", "gflops")},
                      videos=same.get("videos"), framework=same.get("framework", "flax"),
                      reused_from=same["name"])
      else:
        logging.info("run %s: removing blocks %s", run.name, sorted(order) or "none")
        record.update(self._train(run, order, key))
      record["status"] = "ok"
    except Exception as e:  # noqa: BLE001 — a failed run is recorded; SIGTERM and ^C still stop the sweep
      logging.error("run %s failed: %s", run.name, e)
      record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
    record["seconds"] = time.perf_counter() - start
    self.run_dir(run).mkdir(parents=True, exist_ok=True)
    write_json(self.run_dir(run) / RESULT_FILE, record)
    return record

  def results(self) -> list[dict]:
    return [r for r in map(self.result, self.runs) if r is not None]


def _ok(result: dict | None) -> bool:
  return result is not None and result.get("status") == "ok"


def prepare(config, workdir, train_fn: TrainFn = pipeline.run) -> Sweep:
  """Builds the data and the initial checkpoint (once, before a job array starts), scores every criterion
  (rankings.json) and writes plan.json."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  sweep = Sweep(config, workdir, pipeline.initial_stage(config, workdir), train_fn)
  on_primary("sweep rankings", sweep.write_rankings)
  write_json(workdir / "plan.json", {"initial": str(sweep.initial), "depth": sweep.depth, "settings": sweep.settings,
                                      "runs": [dataclasses.asdict(r) for r in sweep.runs]})
  return sweep


def open_sweep(config, workdir, train_fn: TrainFn = pipeline.run) -> Sweep:
  plan_file = pathlib.Path(workdir) / "plan.json"
  if not plan_file.is_file():
    raise FileNotFoundError(f"{plan_file} not found: run the sweep once with --prepare (or without --run_index)")
  planned = json.loads(plan_file.read_text())
  sweep = Sweep(config, workdir, planned["initial"], train_fn)
  if planned.get("settings") != sweep.settings or planned["runs"] != [dataclasses.asdict(r) for r in sweep.runs]:
    raise ValueError(f"{plan_file}: the config is not the one --prepare planned (its runs or settings changed); "
                     "run --prepare again with this config, so that every task runs the plan it names")
  return sweep


def run_all(sweep: Sweep) -> list[dict]:
  for i, run in enumerate(sweep.runs):
    result = sweep.execute(run)
    logging.info("[%d/%d] %s: %s", i + 1, len(sweep.runs), run.name,
                 f"WAR {result['war']:.2f}" if _ok(result) else result.get("error"))
  return sweep.results()
