"""Masked pretraining on the synthetic motion set: the embedded default's first stage on its own (see
`configs/demo.py`), on the clips of all 10 classes, no labels read. Writes the pretraining
checkpoint, the loss curve and a reconstruction picture.

  gardener pretrain --config configs/pretrain_demo.py --workdir runs/pretrain_demo
"""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
  base = demo.get_config()
  config = demo.masked_pretraining(epochs=28)
  config.job = "pretrain"
  config.seed = 0
  config.data = base.data
  config.data.classes = ()  # every class of the dataset
  config.model = base.model
  config.train.eval_every_epochs = 7
  return config
