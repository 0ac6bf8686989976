"""The release's UCF101-from-scratch ViT-B masked pretraining (SPEC §8; 3200 epochs, reported 91.3 after
finetuning): tube masking at 0.75, batch 192, base lr 3e-4 × batch / 256, 40 warm-up epochs; UCF101
split 1's training videos, labels unused.

  gardener pretrain --config configs/pretrain_ucf101_vitb.py --workdir runs/pretrain_ucf101 \\
      --config.data.manual_dir=~/ucf101
"""

from configs import pretrain_k400_vitb

UCF101_TRAIN_VIDEOS = 9_537  # split 1


def get_config():
  config = pretrain_k400_vitb.get_config()
  config.data.update(name="ucf101", config="split_1", workers=8)
  config.mae.mask_ratio = 0.75
  config.train.update(batch_size=192, epochs=3200, eval_every_epochs=100, checkpoint_every=200)
  pretrain_k400_vitb.scaled_by_batch(config, base_lr=3e-4, base_end_lr=1e-5, warmup_epochs=40,
                                     videos=UCF101_TRAIN_VIDEOS)
  return config
