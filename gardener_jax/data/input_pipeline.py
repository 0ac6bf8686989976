"""grain input pipelines over the prepared TFDS array_record datasets, sampling clips as VideoMAE does.

train: one random clip per video, random resized crop, horizontal flip, ImageNet normalisation;
eval: `num_clips` evenly spaced clips × `num_crops` crops per video, kept together so that the
predictions can be averaged per video. Each process reads a disjoint shard; a seed fixes the
order; decoding runs in worker processes with prefetch. A video whose stored frames cannot be
decoded is counted, logged once and skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import grain
import jax
import numpy as np
from absl import flags, logging
from PIL import Image

from gardener_jax.data import sampling, video_io


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  num_frames: int = 16
  sampling_rate: int = 4
  image_size: int = 224  # side of the square crop fed to the model
  num_clips: int = 1  # eval: clips per video
  num_crops: int = 1  # eval: crops per clip (1 or 3)
  augment: bool = True  # train: random resized crop (+ flip); False: resize the short side, centre crop
  flip: bool = True  # horizontal flips (off where left and right are different classes)
  min_crop_area: float = 0.08  # random resized crop keeps this share of the frame at least


def open_split(data_dir, name: str, split: str, config: str | None = None):
  """The random-access source of a prepared split (no TensorFlow needed)."""
  import tensorflow_datasets as tfds

  root = pathlib.Path(data_dir) / name
  candidates = sorted(p for p in root.glob(f"{config or '*'}/*") if (p / "dataset_info.json").is_file())
  if not candidates:
    raise FileNotFoundError(f"{root}: no prepared dataset{f' with config {config!r}' if config else ''}; "
                            f"run `gardener data build {name} --data_dir {data_dir}` first")
  builder = tfds.builder_from_directory(candidates[-1])
  if split not in builder.info.splits:
    raise ValueError(f"{candidates[-1]}: no split {split!r}; it has {list(builder.info.splits)}")
  return builder.as_data_source(split=split), builder.info


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  if frames.shape[1:3] == (height, width):
    return frames
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])


def train_clip(example: dict, rng: np.random.Generator, spec: ClipSpec) -> dict:
  try:
    index = sampling.train_indices(int(example["num_frames"]), spec.num_frames, spec.sampling_rate, rng)
    frames = video_io.decode_jpeg(example["frames"], index)
  except video_io.VideoError as e:
    return {"corrupt": f"{example['video_id']!r}: {e}"}
  height, width = frames.shape[1:3]
  if spec.augment:
    top, left, h, w = sampling.random_resized_crop_box(height, width, rng, scale=(spec.min_crop_area, 1.0))
    frames = _resize(frames[:, top:top + h, left:left + w], spec.image_size, spec.image_size)
    if spec.flip and rng.random() < 0.5:
      frames = frames[:, :, ::-1]
  else:
    frames = _short_side_crops(frames, spec.image_size, 1)[0]
  return {"clips": sampling.normalize(frames), "label": np.int32(example["label"])}


def _short_side_crops(frames: np.ndarray, size: int, num_crops: int) -> list[np.ndarray]:
  height, width = frames.shape[1:3]
  scale = size / min(height, width)
  frames = _resize(frames, max(size, round(height * scale)), max(size, round(width * scale)))
  return [frames[:, t:t + h, l:l + w] for t, l, h, w in sampling.eval_crop_boxes(*frames.shape[1:3], size, num_crops)]


def eval_views(example: dict, index: int, spec: ClipSpec) -> dict:
  """All num_clips × num_crops views of one video, tagged with the video's index in the split."""
  try:
    clips = sampling.eval_indices(int(example["num_frames"]), spec.num_frames, spec.sampling_rate, spec.num_clips)
    decoded = video_io.decode_jpeg(example["frames"], np.unique(clips))
  except video_io.VideoError as e:
    return {"corrupt": f"{example['video_id']!r}: {e}"}
  position = {frame: i for i, frame in enumerate(np.unique(clips))}
  views = [crop for clip in clips for crop in _short_side_crops(decoded[[position[f] for f in clip]], spec.image_size,
                                                                 spec.num_crops)]
  return {"clips": sampling.normalize(np.stack(views)), "label": np.int32(example["label"]),
          "video_index": np.int32(index)}


class SkipCorrupt:
  """A filter that drops (and counts) examples whose frames could not be decoded; logs the first."""

  def __init__(self):
    self.count = 0

  def __call__(self, element: dict) -> bool:
    if "corrupt" not in element:
      return True
    self.count += 1
    if self.count == 1:
      logging.warning("skipping a video whose frames cannot be decoded (further ones are only counted): %s",
                      element["corrupt"])
    return False


@dataclasses.dataclass
class Pipeline:
  dataset: grain.IterDataset
  skipped: SkipCorrupt

  def __iter__(self):
    return iter(self.dataset)


@dataclasses.dataclass(frozen=True)
class Pipelines:
  """How a job reads its data: the clip specs, seed and workers; this process's shard is implied."""

  train_spec: ClipSpec
  eval_spec: ClipSpec
  seed: int = 0
  workers: int = 0
  eval_batch_size: int = 8

  def train(self, source, batch_size: int, start_index: int = 0) -> Pipeline:
    return train_pipeline(source, self.train_spec, batch_size, self.seed, jax.process_index(), jax.process_count(),
                          self.workers, start_index=start_index)

  def eval(self, source) -> Pipeline:
    return eval_pipeline(source, self.eval_spec, self.eval_batch_size, jax.process_index(), jax.process_count(),
                         self.workers)


class Subset:
  """The examples of `source` whose class is in `classes`, relabelled 0..len(classes)−1 (a new task
  from the same videos)."""

  def __init__(self, source, names: list[str], classes):
    index_of = {name: i for i, name in enumerate(names)}
    unknown = [c for c in classes if c not in index_of]
    if unknown:
      raise ValueError(f"classes {unknown} are not in the dataset; it has {names}")
    self._relabel = {index_of[c]: i for i, c in enumerate(classes)}
    self._source = source
    self._indices = [i for i in range(len(source)) if int(source[i]["label"]) in self._relabel]

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> dict:
    example = dict(self._source[self._indices[i]])
    example["label"] = self._relabel[int(example["label"])]
    return example


def _shard(source, shard_index: int, shard_count: int) -> grain.MapDataset:
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard {shard_index} of {shard_count}")
  return grain.MapDataset.source(source)[shard_index::shard_count]


def _finish(dataset: grain.MapDataset, batch_size: int, num_workers: int, drop_remainder: bool) -> Pipeline:
  skipped = SkipCorrupt()
  stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
  if num_workers:
    if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside an absl app they keep their defaults
      flags.FLAGS.mark_as_parsed()
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2))
  return Pipeline(stream.filter(skipped).batch(batch_size, drop_remainder=drop_remainder), skipped)


def train_pipeline(source, spec: ClipSpec, batch_size: int, seed: int, shard_index: int = 0, shard_count: int = 1,
                   num_workers: int = 0, num_epochs: int | None = None, start_index: int = 0) -> Pipeline:
  """Batches of {'clips': (batch, T, S, S, 3) float32, 'label': (batch,)}; `batch_size` is this process's.

  Every example's clip and crop are drawn from its position in the (reshuffled each epoch) stream,
  so `start_index` (examples already consumed, e.g. step × batch_size on resume) continues the
  exact stream of an uninterrupted run.
  """
  dataset = _shard(source, shard_index, shard_count).shuffle(seed=seed).repeat(num_epochs)
  dataset = dataset.random_map(functools.partial(train_clip, spec=spec), seed=seed)[start_index:]
  return _finish(dataset, batch_size, num_workers, drop_remainder=True)


def eval_pipeline(source, spec: ClipSpec, batch_size: int, shard_index: int = 0, shard_count: int = 1,
                  num_workers: int = 0) -> Pipeline:
  """Batches of {'clips': (batch, views, T, S, S, 3), 'label', 'video_index'}, every video once, in order."""
  views = functools.partial(_sharded_eval_views, spec=spec, shard_index=shard_index, shard_count=shard_count)
  return _finish(_shard(source, shard_index, shard_count).map_with_index(views), batch_size, num_workers,
                 drop_remainder=False)


def _sharded_eval_views(position: int, example: dict, spec: ClipSpec, shard_index: int, shard_count: int) -> dict:
  return eval_views(example, position * shard_count + shard_index, spec)
