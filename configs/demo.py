"""The embedded default: the whole pipeline on data and a model the job makes itself, on 2 CPU cores.

1. builds the synthetic motion set (10 classes, 64 × 64, 32 frames; 80 train / 10 test videos each);
2. trains a small VideoMAE from scratch on 8 of its classes: the "pretrained" model;
3. scores its blocks by entropy — on a histogram, since `exact` is degenerate on float32 weights —
   and removes half of them;
4. finetunes the pruned encoder with a new head on all 10 classes (the 2 rotation classes are new),
   choosing `best/` on 10 % of the training videos held out, evaluates the final params on the test
   split, and writes report.{json,md} with the training curves.

  python -m gardener_jax.main --config configs/demo.py --workdir runs/demo
"""

import ml_collections

from gardener_jax.data.synthetic import CLASSES


def optim(lr: float, warmup_steps: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(lr=lr, warmup_steps=warmup_steps, weight_decay=0.05, b1=0.9, b2=0.999,
                                        clip_norm=1.0, layer_decay=1.0, accumulate=1))


def train(epochs: int, batch_size: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      batch_size=batch_size, epochs=epochs, log_every=5, checkpoint_every=50, eval_every_epochs=max(1, epochs // 4),
      label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, dtype="float32", save_dtype=""))


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # data order, augmentation, initialisation, dropout, the validation hold-out, random criteria

  config.data = ml_collections.ConfigDict(dict(
      name="synthetic_motion", config="default", data_dir="", manual_dir="", train_split="train", eval_split="test",
      val_split="", val_fraction=0.1, classes=tuple(CLASSES), num_frames=8, sampling_rate=2, image_size=64,
      num_clips=2, num_crops=1, augment=True,
      flip=False, min_crop_area=0.5, workers=0, eval_batch_size=16))  # no flips: left and right are classes

  # 'pretrain' trains the initial model here; otherwise a PyTorch checkpoint path, a gardener_jax
  # checkpoint directory, or 'random_hf'. What shapes cannot tell comes from variant or the flags.
  config.init = ml_collections.ConfigDict(dict(
      source="pretrain", variant="", num_heads=ml_collections.config_dict.placeholder(int),
      num_frames=ml_collections.config_dict.placeholder(int), image_size=ml_collections.config_dict.placeholder(int)))
  config.model = ml_collections.ConfigDict(dict(
      width=96, depth=6, num_heads=4, mlp_dim=384, patch_size=16, tubelet_size=2, num_classes=8,
      drop_path_rate=0.0, dropout_rate=0.0, remat=False))
  config.pretrain = ml_collections.ConfigDict(dict(classes=tuple(CLASSES[:8])))
  config.pretrain.train = train(epochs=20, batch_size=32)
  config.pretrain.optim = optim(lr=2e-3, warmup_steps=50)

  config.prune = ml_collections.ConfigDict(dict(
      criterion="entropy", discretize="hist:256", ratio=0.5, remove=0, blocks="", oracle=""))

  config.train = train(epochs=16, batch_size=32)
  config.optim = optim(lr=1e-3, warmup_steps=40)
  return config
