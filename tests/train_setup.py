"""The tiny model, data and recipe the training tests share (in the test process and in worker processes)."""

import ml_collections

from gardener_jax.data import input_pipeline
from gardener_jax.models import ModelConfig

MODEL = ModelConfig(width=32, depth=2, num_heads=4, mlp_dim=64, num_classes=4, num_frames=4, image_size=32)
SPEC = input_pipeline.ClipSpec(num_frames=4, sampling_rate=2, image_size=32)
CLASSES = ["square_right", "square_left", "square_down", "square_up"]  # synthetic_motion 'tiny'


def fit_config(**train_overrides) -> ml_collections.ConfigDict:
  """12 steps on the tiny set's 16 training videos (batch 4, 3 epochs), a checkpoint every 2 steps."""
  train = dict(batch_size=4, epochs=3, log_every=1, checkpoint_every=2, eval_every_epochs=1, label_smoothing=0.1,
               mixup_alpha=0.0, cutmix_alpha=0.0, dtype="float32")
  train.update(train_overrides)
  return ml_collections.ConfigDict(dict(train=train, optim=dict(
      lr=1e-3, warmup_steps=2, weight_decay=0.05, b1=0.9, b2=0.999, clip_norm=1.0, layer_decay=0.75, accumulate=1)))


def splits(data_dir, val=None):
  from gardener_jax.data import sources

  return sources.Splits(train=sources.open_split(data_dir, "synthetic_motion", "train")[0], val=val,
                        test=sources.open_split(data_dir, "synthetic_motion", "test")[0], names=CLASSES)


def corrupted(examples: list, index: int) -> list:
  """`examples` with example `index`'s stored frames replaced by bytes that are not JPEG."""
  examples = list(examples)
  examples[index] = {**examples[index], "frames": [b"not a jpeg"] * len(examples[index]["frames"])}
  return examples
