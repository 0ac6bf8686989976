"""The sweep's embedded default: the paper's comparison (entropy, L1, random and the oracle) at 3 pruning
levels on the synthetic motion set, every run trained with 3 seeds, with a 12-block VideoMAE trained here
first, supervised from scratch and kept in float32 (so entropy is taken on a 256-bin histogram;
`configs/demo.py` walks the paper's whole path: masked pretraining, float16, `exact`). Every cell is then a
mean over seeds with an interval, and each criterion is tested against random; in ≤ 30 min on 2 CPU cores.
Tuples, so that `--config.sweep.criteria='(...)'` (`ALL_CRITERIA` lists SPEC §10's) or
`--config.sweep.seeds='(0, 1, 2, 3, 4)'` override them; each seed or criterion adds trainings.

  gardener sweep --config configs/sweep_demo.py --workdir runs/sweep_demo
  gardener compare-paper runs/sweep_demo
"""

import ml_collections

from configs import demo

CRITERIA = ("oracle", "entropy", "random", "l1")
ALL_CRITERIA = ("oracle", "entropy", "random", "l1", "l2", "mean", "variance", "std", "kurtosis", "mutual_information",
                "value_entropy", "first", "last",
                "alpha", "spectral_entropy", "block_influence", "angular_distance")  # SPEC §10; the last two read data


def get_config() -> ml_collections.ConfigDict:
  config = demo.get_config()
  config.model.update(width=64, depth=12, num_heads=4, mlp_dim=128)
  config.data.classes = config.pretrain.classes  # finetune on the task the blocks were trained for, keeping the head
  config.pretrain.masked = None
  config.pretrain.save_dtype = ""
  config.pretrain.train.update(epochs=40, batch_size=32)
  config.prune.discretize = "hist:256"
  config.data.val_fraction = 0.0  # each run is evaluated once, on the test split, at the end
  config.train.update(batch_size=32, log_every=5)
  config.optim.update(lr=5e-4, warmup_steps=10)
  config.sweep = ml_collections.ConfigDict(dict(
      criteria=CRITERIA, levels=(3, 5, 9), random_seeds=(0, 1), seeds=(0, 1, 2), baseline=True, greedy=False,
      keep_checkpoints=False,
      epochs=(2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4)))  # finetuning epochs by blocks removed, 0 … 11
  return config
