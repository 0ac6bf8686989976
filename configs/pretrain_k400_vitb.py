"""The release's Kinetics-400 ViT-B masked pretraining (SPEC §8; MCG-NJU/VideoMAE, 800 epochs): tube
masking at 0.9, a 4-block decoder of width 384, AdamW β = (0.9, 0.95), weight decay 0.05, base lr
1.5e-4 × batch / 256 at batch 2048, 40 warm-up epochs then cosine to 1e-5 × batch / 256, 16 frames at
sampling rate 4, 224², crops as the release's multi-scale crop allows (at least 0.66² of the frame's
area) and no flips. The learning rates and the warm-up follow the batch: `--config.train.batch_size=256`
(or `optim.accumulate`) rescales them. Kinetics is read as a `video_folder` (root/<class>/<video> with
splits/train.txt); labels are not used.

  gardener pretrain --config configs/pretrain_k400_vitb.py --workdir runs/pretrain_k400 \\
      --config.data.manual_dir=~/kinetics400 --distributed
"""

import ml_collections

from configs import demo


def scaled_by_batch(config: ml_collections.ConfigDict, base_lr: float, base_end_lr: float, warmup_epochs: int,
                    videos: int) -> None:
  """optim.lr = base_lr × batch / 256, optim.end_lr = base_end_lr × batch / 256 and optim.warmup_steps =
  warmup_epochs of `videos`, as references to the batch (train.batch_size × optim.accumulate): a command-line
  batch size changes them all, as in the release."""
  batch = config.train.get_ref("batch_size") * config.optim.get_ref("accumulate")
  config.optim.lr = batch.to_float() * (base_lr / 256)
  config.optim.end_lr = batch.to_float() * (base_end_lr / 256)
  config.optim.warmup_steps = warmup_epochs * videos // batch

KINETICS_TRAIN_VIDEOS = 240_000  # about; sets the warm-up in steps


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.job = "pretrain"
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      name="video_folder", config="", data_dir="data", manual_dir="", train_split="train", eval_split="",
      val_split="", val_fraction=0.0, classes=(), num_frames=16, sampling_rate=4, image_size=224, num_clips=1,
      num_crops=1, augment=True, flip=False, min_crop_area=0.66 ** 2, scaled_decode=False, workers=16,
      eval_batch_size=64))
  config.model = ml_collections.ConfigDict(dict(width=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16,
                                                tubelet_size=2, drop_path_rate=0.0, remat=False))
  config.mae = demo.mae(mask_ratio=0.9, width=384, depth=4, num_heads=6)
  config.train = ml_collections.ConfigDict(dict(
      batch_size=2048, epochs=800, log_every=50, checkpoint_every=500, eval_every_epochs=20, label_smoothing=0.0,
      mixup_alpha=0.0, cutmix_alpha=0.0, dtype="bfloat16", save_dtype="",
      # False: one parameter subtree per block while training, no scan (on a 2-core CPU, float32: 0.82–0.86 × the
      # scanned step's time, 0.71 × its temporaries; README); not measured on accelerators.
      scan_blocks=True))
  config.optim = ml_collections.ConfigDict(dict(weight_decay=0.05, b1=0.9, b2=0.95, clip_norm=0.0, layer_decay=1.0,
                                                accumulate=1))
  scaled_by_batch(config, base_lr=1.5e-4, base_end_lr=1e-5, warmup_epochs=40, videos=KINETICS_TRAIN_VIDEOS)
  return config
