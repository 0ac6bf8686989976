"""Launches a gardener_jax job from an ml_collections config: prune and finetune (`pipeline`), or,
for a config with `job = 'pretrain'`, masked pretraining (`pretrain`). The whole config is checked first.

  gardener train --config configs/demo.py --workdir runs/demo [--config.seed=1]
  gardener pretrain --config configs/pretrain_demo.py --workdir runs/pretrain_demo
  (also python -m gardener_jax.main --config ... --workdir ...)
"""

import functools

from absl import app, flags
from ml_collections import config_flags

from gardener_jax import logs, pipeline, pretrain, validate

_CONFIG = config_flags.DEFINE_config_file("config", None, "job config (a configs/*.py file)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints and reports")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "print the plan (stages, model, data, batches, outputs) and exit")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first (multi-host: every "
                                 "process runs this same command; TPU pods and SLURM are detected)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv, verb: str | None = None):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.quiet_logging()
  if _DISTRIBUTED.value:
    import jax

    jax.distributed.initialize()
  config = _CONFIG.value
  kind = "pretrain" if config.get("job") == "pretrain" else "job"
  if verb and verb != {"pretrain": "pretrain", "job": "train"}[kind]:
    raise app.UsageError(f"`gardener {verb}` got a {'masked-pretraining' if kind == 'pretrain' else 'finetuning'} "
                         f"config: use `gardener {'pretrain' if kind == 'pretrain' else 'train'}`")
  validate.exit_on_problems(config, kind)
  if _DRY_RUN.value:
    from gardener_jax import plan

    print(plan.pretraining(config, _WORKDIR.value) if kind == "pretrain" else plan.job(config, _WORKDIR.value))
    return
  if kind == "pretrain":
    pretrain.run(config, _WORKDIR.value)
  else:
    pipeline.run(config, _WORKDIR.value)



def run(argv, verb: str | None = None):
  app.run(functools.partial(main, verb=verb), argv=argv)


if __name__ == "__main__":
  app.run(main)
