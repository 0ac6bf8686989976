"""The standard VideoMAE finetuning recipe (SPEC §5) on UCF101 split 1, for comparison with the paper's:
base lr 5e-4 × batch / 256 with 5 warm-up epochs, cosine to 1e-6 × batch / 256 (all three follow a
command-line batch size), layer decay 0.7, weight decay 0.05, drop path 0.1, label smoothing 0.1,
mixup 0.8 / CutMix 1.0, random resized crop and flip, test 5 clips × 3 crops. Not here: the release's
RandAugment, random erasing, repeated sampling and its 0.001 scale on the new head's init. `best/` is
chosen on 5 % of the training videos held out (the release chose it on the test split).

  gardener train --config configs/ucf101_vitb_videomae.py:3 --workdir runs/ucf101_videomae_k3 \\
      --config.init.source=... --config.data.manual_dir=~/ucf101
"""

from configs import pretrain_k400_vitb, ucf101_vitb
from configs.pretrain_ucf101_vitb import UCF101_TRAIN_VIDEOS


def get_config(removed: str = "3"):
  config = ucf101_vitb.get_config(removed)
  config.data.update(config="split_1", augment=True, flip=True, num_clips=5, num_crops=3, eval_batch_size=2,
                     val_fraction=0.05)
  config.model.update(drop_path_rate=0.1)
  config.train.update(epochs=100, label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0, eval_every_epochs=10)
  config.optim.update(layer_decay=0.7, clip_norm=0.0)
  pretrain_k400_vitb.scaled_by_batch(config, base_lr=5e-4, base_end_lr=1e-6, warmup_epochs=5,
                                     videos=UCF101_TRAIN_VIDEOS)
  return config
