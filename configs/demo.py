"""The embedded default: the paper's whole path on data and a model the job makes itself, on 2 CPU cores.

1. builds the synthetic motion set (10 classes, 64 × 64, 32 frames; 80 train / 10 test videos each);
2. makes the source model as the scored release was made: masked pretraining of a small VideoMAE on
   the clips of 8 classes (labels unread; the stand-in for Kinetics), then supervised finetuning on
   those 8 classes, stored in float16;
3. ranks its blocks by `exact` entropy (of the float16 values) and removes the lowest half;
4. finetunes the pruned encoder with a new head on all 10 classes (the 2 rotation classes are new),
   choosing `best/` on 10 % of the training videos held out, evaluates the final params on the test
   split, and writes report.{json,md} with the pretraining loss, the reconstructions, the entropies,
   the pruned blocks and the training curves.

  gardener train --config configs/demo.py --workdir runs/demo
"""

import ml_collections

from gardener_jax.data.synthetic import CLASSES


def optim(lr: float, warmup_steps: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(lr=lr, warmup_steps=warmup_steps, weight_decay=0.05, b1=0.9, b2=0.999,
                                        clip_norm=1.0, layer_decay=1.0, accumulate=1))


def train(epochs: int, batch_size: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      batch_size=batch_size, epochs=epochs, log_every=5, checkpoint_every=50, eval_every_epochs=max(1, epochs // 4),
      label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, dtype="float32", save_dtype="",
      scan_blocks=True,  # False: the blocks' params one subtree each while training, not stacked (train.fit)
      # XLA options for the train step's compilation, e.g. {'xla_cpu_scheduler_type':
      # 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}: fewer temporaries for a scanned ViT-B step on a CPU (README)
      compiler_options={}))


def mae(mask_ratio: float, width: int, depth: int, num_heads: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(mask_ratio=mask_ratio, norm_pix_loss=True, decoder=dict(
      width=width, depth=depth, num_heads=num_heads, mlp_dim=4 * width)))


def masked_pretraining(epochs: int) -> ml_collections.ConfigDict:
  """Half of each clip's tubes hidden (the release hides 75–90 % of a 14 × 14 grid; of this 4 × 4 grid
  that leaves too little to infer from), a narrow 2-block decoder, AdamW with β2 = 0.95 as the release."""
  section = ml_collections.ConfigDict()
  section.mae = mae(mask_ratio=0.5, width=64, depth=2, num_heads=4)
  section.train = train(epochs=epochs, batch_size=32)
  section.train.eval_every_epochs = max(1, epochs // 2)
  section.optim = optim(lr=2e-3, warmup_steps=40)
  section.optim.b2 = 0.95
  return section


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # data order, augmentation, initialisation, dropout, the validation hold-out, random criteria

  config.data = ml_collections.ConfigDict(dict(
      name="synthetic_motion", config="default", data_dir="", manual_dir="", train_split="train", eval_split="test",
      val_split="", val_fraction=0.1, classes=tuple(CLASSES), num_frames=8, sampling_rate=2, image_size=64,
      num_clips=2, num_crops=1, augment=True,
      flip=False, min_crop_area=0.5, scaled_decode=False, workers=0,  # no flips: left and right are classes
      eval_batch_size=16))

  # 'pretrain' makes the source model here (`pretrain`); otherwise a PyTorch checkpoint path, a gardener_jax
  # checkpoint directory, or 'random_hf'. What shapes cannot tell comes from variant or the flags.
  config.init = ml_collections.ConfigDict(dict(
      source="pretrain", variant="", num_heads=ml_collections.config_dict.placeholder(int),
      num_frames=ml_collections.config_dict.placeholder(int), image_size=ml_collections.config_dict.placeholder(int)))
  config.model = ml_collections.ConfigDict(dict(
      width=96, depth=6, num_heads=4, mlp_dim=384, patch_size=16, tubelet_size=2, num_classes=8,
      drop_path_rate=0.0, dropout_rate=0.0, remat=False))
  # The source model: `masked` pretraining (None: none, supervised from scratch), then supervised
  # `train`/`optim` on `classes`, saved as `save_dtype`.
  config.pretrain = ml_collections.ConfigDict(dict(classes=tuple(CLASSES[:8]), save_dtype="float16"))
  config.pretrain.masked = masked_pretraining(epochs=16)
  config.pretrain.train = train(epochs=20, batch_size=32)
  config.pretrain.optim = optim(lr=2e-3, warmup_steps=50)

  config.prune = ml_collections.ConfigDict(dict(
      criterion="entropy", discretize="exact", ratio=0.5, remove=0, blocks="", oracle="",
      calibration_clips=8))  # clips of the training split for block_influence, angular_distance

  config.train = train(epochs=16, batch_size=32)
  config.optim = optim(lr=1e-3, warmup_steps=40)
  return config
