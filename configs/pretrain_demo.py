"""Masked pretraining from scratch on the synthetic motion set (the embedded default's first stage on
its own): no labels read, the demo's small VideoMAE with a narrow decoder. Half of each clip's tubes
are hidden (the release hides 75–90 % of a 14 × 14 grid; of this 4 × 4 grid that leaves too little
to infer from). Writes the pretraining checkpoint, the loss curve and a reconstruction picture.

  python -m gardener_jax.main --config configs/pretrain_demo.py --workdir runs/pretrain_demo
"""

import ml_collections

from configs import demo


def mae(mask_ratio: float, width: int, depth: int, num_heads: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(mask_ratio=mask_ratio, norm_pix_loss=True, decoder=dict(
      width=width, depth=depth, num_heads=num_heads, mlp_dim=4 * width)))


def get_config() -> ml_collections.ConfigDict:
  base = demo.get_config()
  config = ml_collections.ConfigDict()
  config.job = "pretrain"
  config.seed = 0
  config.data = base.data
  config.data.update(classes=(), flip=False)
  config.model = base.model
  config.mae = mae(mask_ratio=0.5, width=64, depth=2, num_heads=4)
  config.train = demo.train(epochs=28, batch_size=32)
  config.train.eval_every_epochs = 7
  config.optim = demo.optim(lr=2e-3, warmup_steps=40)
  config.optim.update(b2=0.95)
  return config
