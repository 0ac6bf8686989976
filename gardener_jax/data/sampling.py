"""Which frames a clip takes and which pixels a crop keeps, as VideoMAE samples them.

A clip is `num_frames` frames `sampling_rate` apart. Training takes one clip at a random position;
evaluation takes `num_clips` clips spread evenly over the video and `num_crops` crops across its
long side. Videos shorter than a clip repeat their last frame.
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def train_indices(video_length: int, num_frames: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
  span = num_frames * sampling_rate
  if video_length <= span:  # too short: the whole video, then its last frame repeated
    taken = np.linspace(0, video_length, num=video_length // sampling_rate)
    index = np.concatenate([taken, np.full(num_frames - len(taken), video_length)])
    return np.clip(index, 0, video_length - 1).astype(np.int64)
  end = rng.integers(span, video_length)
  return np.clip(np.linspace(end - span, end, num=num_frames), end - span, end - 1).astype(np.int64)


def eval_indices(video_length: int, num_frames: int, sampling_rate: int, num_clips: int) -> np.ndarray:
  """(num_clips, num_frames) frame indices, the clips evenly spaced from the first frame to the last."""
  strided = np.arange(0, video_length, sampling_rate)
  if len(strided) < num_frames:
    strided = np.concatenate([strided, np.full(num_frames - len(strided), strided[-1])])
  room = len(strided) - num_frames
  starts = [room // 2] if num_clips == 1 else [int(c * room / (num_clips - 1)) for c in range(num_clips)]
  return np.stack([strided[s:s + num_frames] for s in starts])


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """(top, left, crop height, crop width) covering a random area share and aspect ratio; the
  whole frame when ten tries find no fit."""
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return 0, 0, height, width


def eval_crop_boxes(height: int, width: int, size: int, num_crops: int) -> list[tuple[int, int, int, int]]:
  """`num_crops` (1: centre; 3: start, centre, end of the long side) size × size boxes of a frame whose
  short side is already `size`."""
  long_side_is_width = width >= height
  room = (width if long_side_is_width else height) - size
  offsets = [room // 2] if num_crops == 1 else [int(c * room / (num_crops - 1)) for c in range(num_crops)]
  if long_side_is_width:
    return [((height - size) // 2, o, size, size) for o in offsets]
  return [(o, (width - size) // 2, size, size) for o in offsets]


# Every uint8 value of every channel, ImageNet-normalised once by numpy. Clips are normalised by looking
# their values up here, on the host or on the devices alike: the same bits everywhere (XLA's own
# arithmetic for the same formula differs from numpy's in the last bit, which a seeded run would feel).
_NORMALIZED = (np.arange(256, dtype=np.float32)[:, None] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (256, 3)


def normalize(frames):
  """uint8 RGB → float32, ImageNet mean and std; numpy arrays on the host, jax arrays on the devices
  (the pipelines hand out uint8 clips, a quarter of float32's bytes, and the step normalises them)."""
  if frames.dtype != np.uint8:
    raise TypeError(f"expected uint8 RGB frames, got {frames.dtype}")
  if isinstance(frames, np.ndarray):
    return _NORMALIZED[frames, np.arange(3)]
  import jax.numpy as jnp

  return jnp.asarray(_NORMALIZED)[frames, jnp.arange(3)]
