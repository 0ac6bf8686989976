"""The paper's comparison (SPEC §6) on UCF101 with ViT-B: every criterion at k = 1, 3, 5, 7, 9, 11 of 12,
the 12 single-block oracle runs, random over 3 seeds, each finetuned with the paper's recipe for its level.

  gardener sweep --config configs/sweep_ucf101_vitb.py --workdir runs/sweep_ucf101 \\
      --config.init.source=path/to/videomae-base-finetuned-kinetics --config.data.manual_dir=~/ucf101 --prepare
  gardener sweep --config configs/sweep_ucf101_vitb.py --workdir runs/sweep_ucf101 ... --run_index $TASK_ID
  gardener sweep --config configs/sweep_ucf101_vitb.py --workdir runs/sweep_ucf101 ... --collect
  gardener compare-paper runs/sweep_ucf101
"""

import ml_collections

from configs import ucf101_vitb


def epochs_by_removed(depth: int = 12) -> tuple[int, ...]:
  """The paper's epochs for each level; a k between levels takes the next level's (greedy steps)."""
  levels = sorted(ucf101_vitb.EPOCHS_BY_REMOVED)
  return tuple(ucf101_vitb.EPOCHS_BY_REMOVED[min(level for level in levels if level >= k)] for k in range(depth))


def get_config() -> ml_collections.ConfigDict:
  config = ucf101_vitb.get_config("0")
  config.sweep = ml_collections.ConfigDict(dict(
      criteria=("oracle", "entropy", "random", "l1", "l2", "variance", "std", "kurtosis", "mutual_information",
                "mean", "value_entropy"),  # the paper's; add SPEC §10's (alpha, block_influence, ...) to compare more
      levels=(1, 3, 5, 7, 9, 11), random_seeds=(0, 1, 2), baseline=True, greedy=False, keep_checkpoints=False,
      seeds=(0,),  # training seeds: each one more trains every run again; (0, 1, 2) gives the tables intervals
      epochs=epochs_by_removed()))
  return config
