"""Runs a sweep: every criterion × pruning level, the oracle, and their tables (see `gardener_jax.sweep`).

  gardener sweep --config configs/sweep_demo.py --workdir runs/sweep_demo
  # on a cluster: prepare once, then one array task per run, then collect
  gardener sweep --config C --workdir D --prepare
  gardener sweep --config C --workdir D --run_index $SLURM_ARRAY_TASK_ID
  gardener sweep --config C --workdir D --collect
"""

from absl import app, flags, logging
from ml_collections import config_flags

from gardener_jax import compare, logs, sweep, validate
from gardener_jax.sharding import on_primary

_CONFIG = config_flags.DEFINE_config_file("config", None, "sweep config (a configs/sweep_*.py file)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "the sweep directory: plan, runs/<name>/ and the tables")
_RUN_INDEX = flags.DEFINE_integer("run_index", None, "run only this run of the plan (0-based; see plan.json)")
_PREPARE = flags.DEFINE_bool("prepare", False, "only build the data and the initial checkpoint and write plan.json")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "print the run plan (and the reuses, once prepared) and exit")
_COLLECT = flags.DEFINE_bool("collect", False, "only write the tables from the finished runs")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first (a multi-host slice: "
                                 "every process runs this same command and every run trains on all of them)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.quiet_logging()
  if _DISTRIBUTED.value:
    import jax

    jax.distributed.initialize()
  if sum([_PREPARE.value, _COLLECT.value, _RUN_INDEX.value is not None]) > 1:
    raise app.UsageError("give at most one of --prepare, --run_index and --collect")
  config, workdir = _CONFIG.value, _WORKDIR.value
  validate.exit_on_problems(config, "sweep")
  if _DRY_RUN.value:
    from gardener_jax import plan

    print(plan.sweep(config, workdir))
    return
  if _RUN_INDEX.value is not None or _COLLECT.value:
    job = sweep.open_sweep(config, workdir)
  else:
    job = sweep.prepare(config, workdir)
    logging.info("plan: %d runs in %s/plan.json", len(job.runs), workdir)
  if _PREPARE.value:
    return
  if _RUN_INDEX.value is not None:
    if not 0 <= _RUN_INDEX.value < len(job.runs):
      raise app.UsageError(f"--run_index {_RUN_INDEX.value}: the plan has runs 0 … {len(job.runs) - 1}")
    result = job.execute(job.runs[_RUN_INDEX.value])
    logging.info("%s: %s", result["name"], result["status"])
    return 0 if result["status"] == "ok" else 1
  if not _COLLECT.value:
    sweep.run_all(job)
  on_primary("sweep tables", lambda: compare.write(job))
  logging.info("wrote %s/sweep.{csv,md,png}", workdir)


def run(argv=None):
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
