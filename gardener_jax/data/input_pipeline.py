"""grain input pipelines over the prepared TFDS array_record datasets, sampling clips as VideoMAE does.

train: one random clip per video, random resized crop, horizontal flip;
eval: `num_clips` evenly spaced clips × `num_crops` crops per video, kept together so that the
predictions can be averaged per video.

Only the frames a clip samples are decoded (with `scaled_decode`, frames stored at least twice the
size a clip needs at a reduced scale). Clips leave the pipeline as uint8 RGB (a quarter of float32's bytes
to copy to the devices); the step normalises them there (`sampling.normalize`). Each process reads a
disjoint shard; a seed fixes the order; decoding runs in worker processes with prefetch, and
`DevicePrefetch` puts the next batches on the devices while the step runs; its thread, and the threads
and worker processes it starts, run at a low CPU priority (`input_nice`), so that where the input and the
step share cores (a CPU-only host) the step's threads take them first. A training video whose
stored frames cannot be decoded is counted, logged once and skipped; an eval video is kept as a
placeholder marked invalid, so that evaluation can count it and every process knows its number of
batches.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import queue
import sys
import threading
from typing import Any, Callable, Iterator

import grain
import jax
import numpy as np
from absl import flags, logging

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
  # Frames stored at least twice the size a clip needs are decoded at 1/2, 3/8, 1/4 or 1/8 scale (libjpeg's
  # DCT-domain scaling: several times faster), then resized as usual. Off by default: it changes the
  # pixels (the reference decodes whole frames and resizes them bilinearly), and train and eval clips
  # then reach their size by different paths (eval views of such frames always decode scaled; a train
  # crop only when the box is large enough), which a small-image run can feel.
  scaled_decode: bool = False

  @property
  def eval_views_shape(self) -> tuple[int, ...]:
    """One eval video's clips: (views, T, S, S, 3), views = num_clips × num_crops."""
    return (self.num_clips * self.num_crops, self.num_frames, self.image_size, self.image_size, 3)


def train_clip(example: dict, rng: np.random.Generator, spec: ClipSpec) -> dict:
  try:
    index = sampling.train_indices(int(example["num_frames"]), spec.num_frames, spec.sampling_rate, rng)
    if spec.scaled_decode:  # the crop box first, from the header: it says how small a decode may be
      stored = video_io.jpeg_size(example["frames"], index[0])
      box = _train_box(stored, rng, spec)
      frames = video_io.decode_jpeg(example["frames"], index, _needed_size(stored, box, spec.image_size))
    else:
      frames = video_io.decode_jpeg(example["frames"], index)
      stored = frames.shape[1:3]
      box = _train_box(stored, rng, spec)
  except video_io.VideoError as e:
    return {"corrupt": f"{example['video_id']!r}: {e}"}
  if spec.augment:
    top, left, h, w = _scaled_box(box, frames.shape[1] / stored[0], frames.shape[2] / stored[1], frames.shape[1:3])
    frames = video_io.resize(frames[:, top:top + h, left:left + w], spec.image_size, spec.image_size)
    if spec.flip and rng.random() < 0.5:
      frames = frames[:, :, ::-1]
  else:
    frames = _short_side_crops(frames, spec.image_size, 1)[0]
  return {"clips": frames, "label": np.int32(example["label"])}


def _train_box(stored: tuple[int, int], rng: np.random.Generator, spec: ClipSpec):
  """The random resized crop's box in the stored frame's coordinates (None without augmentation)."""
  return sampling.random_resized_crop_box(*stored, rng, scale=(spec.min_crop_area, 1.0)) if spec.augment else None


def _needed_size(stored: tuple[int, int], box, size: int) -> tuple[int, int]:
  """The smallest decoded frame that still gives `box` (or, without one, the short side) `size` pixels."""
  if box is None:
    return _short_side_need(stored, size)
  return math.ceil(stored[0] * size / box[2]), math.ceil(stored[1] * size / box[3])


def _short_side_need(stored: tuple[int, int], size: int) -> tuple[int, int]:
  """The smallest frame whose short side is still `size` (what a reduced-scale decode must keep)."""
  scale = size / min(stored)
  return math.ceil(stored[0] * scale), math.ceil(stored[1] * scale)


def _scaled_box(box, scale_h: float, scale_w: float, bounds) -> tuple[int, int, int, int]:
  """A crop box of the full frame in the coordinates of the frame decoded at (scale_h, scale_w)."""
  top, left, h, w = box
  top, left = int(top * scale_h), int(left * scale_w)
  return top, left, max(1, min(round(h * scale_h), bounds[0] - top)), max(1, min(round(w * scale_w), bounds[1] - left))


def _short_side_crops(frames: np.ndarray, size: int, num_crops: int) -> list[np.ndarray]:
  frames = video_io.resize_short_side(frames, size)
  return [frames[:, t:t + h, l:l + w] for t, l, h, w in sampling.eval_crop_boxes(*frames.shape[1:3], size, num_crops)]


def eval_views(example: dict, index: int, spec: ClipSpec) -> dict:
  """All num_clips × num_crops views of one video, tagged with the video's index in the split.

  A video that cannot be decoded keeps its place, as zeros marked `valid = False`: every process then
  knows how many eval batches it has before reading a frame (evaluation counts only valid videos).
  """
  head = {"label": np.int32(example["label"]), "video_index": np.int32(index)}
  try:
    clips = sampling.eval_indices(int(example["num_frames"]), spec.num_frames, spec.sampling_rate, spec.num_clips)
    need = None
    if spec.scaled_decode:
      need = _short_side_need(video_io.jpeg_size(example["frames"], clips[0, 0]), spec.image_size)
    decoded = video_io.decode_jpeg(example["frames"], np.unique(clips), need)
  except video_io.VideoError as e:
    logging.warning("eval video %r cannot be decoded; it is counted as skipped: %s", example["video_id"], e)
    return {"clips": np.zeros(spec.eval_views_shape, np.uint8), **head, "valid": np.False_}
  return {"clips": _views(decoded, np.searchsorted(np.unique(clips), clips), spec), **head, "valid": np.True_}


def video_views(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
  """The eval views of a decoded video, (T, H, W, 3) uint8 frames: (views, num_frames, S, S, 3) uint8."""
  return _views(frames, sampling.eval_indices(len(frames), spec.num_frames, spec.sampling_rate, spec.num_clips), spec)


def _views(frames: np.ndarray, clips: np.ndarray, spec: ClipSpec) -> np.ndarray:
  """Each clip (a row of indices into `frames`) in each of its crops."""
  return np.stack([crop for clip in clips for crop in _short_side_crops(frames[clip], spec.image_size, spec.num_crops)])


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
  eval_batch_size: int = 8  # global: split over the processes, rounded up to fill every device
  # The niceness of the threads and worker processes that read the input (Linux; 0: the process's own).
  # At 19 they get a core only where the step's threads leave one idle.
  input_nice: int = 19

  def train(self, source, batch_size: int) -> Pipeline:
    return train_pipeline(source, self.train_spec, batch_size, self.seed, jax.process_index(), jax.process_count(),
                          self.workers)

  def eval(self, source, batch_size: int) -> grain.IterDataset:
    return eval_pipeline(source, self.eval_spec, batch_size, jax.process_index(), jax.process_count(), self.workers)


def pipelines_from_config(data, seed: int) -> Pipelines:
  """The clip specs, workers and eval batch size of a job's `config.data`."""
  scaled_decode = data.get("scaled_decode", False)
  train_spec = ClipSpec(data.num_frames, data.sampling_rate, data.image_size, augment=data.augment, flip=data.flip,
                        min_crop_area=data.min_crop_area, scaled_decode=scaled_decode)
  eval_spec = ClipSpec(data.num_frames, data.sampling_rate, data.image_size, data.num_clips, data.num_crops, False,
                       scaled_decode=scaled_decode)
  return Pipelines(train_spec, eval_spec, seed, data.workers, data.eval_batch_size,
                   data.get("input_nice", Pipelines.input_nice))


def _shard(source, shard_index: int, shard_count: int) -> grain.MapDataset:
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard {shard_index} of {shard_count}")
  return grain.MapDataset.source(source)[shard_index::shard_count]


def stream(dataset: grain.MapDataset, num_workers: int) -> grain.IterDataset:
  """`dataset` read in order with threads and prefetch, mapped in `num_workers` processes (0: in this one)."""
  read = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
  if not num_workers:
    return read
  if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside an absl app they keep their defaults
    flags.FLAGS.mark_as_parsed()
  return read.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2))


def shard_seed(seed: int, shard_index: int) -> int:
  """The shuffle and augmentation seed of a process's shard: the job's seed on process 0, so a one-host run
  reads as it always did, and another on each other host, so that hosts do not shuffle their shards alike
  or draw the same clip and crop for their k-th examples."""
  return (seed + 1_000_003 * shard_index) % 2**32


def train_pipeline(source, spec: ClipSpec, batch_size: int, seed: int, shard_index: int = 0, shard_count: int = 1,
                   num_workers: int = 0, num_epochs: int | None = None) -> Pipeline:
  """Batches of {'clips': (batch, T, S, S, 3) uint8, 'label': (batch,)}; `batch_size` is this process's.

  Every example's clip and crop are drawn from its position in the (reshuffled each epoch) stream.
  The iterator's state (`get_state`/`set_state`, saved with each training checkpoint) is its place in
  that stream, skipped corrupt videos included, so a resumed run reads what an uninterrupted one would.
  """
  skipped = SkipCorrupt()
  seed = shard_seed(seed, shard_index)
  dataset = _shard(source, shard_index, shard_count).shuffle(seed=seed).repeat(num_epochs)
  dataset = dataset.random_map(functools.partial(train_clip, spec=spec), seed=seed)
  return Pipeline(stream(dataset, num_workers).filter(skipped).batch(batch_size, drop_remainder=True), skipped)


def eval_pipeline(source, spec: ClipSpec, batch_size: int, shard_index: int = 0, shard_count: int = 1,
                  num_workers: int = 0) -> grain.IterDataset:
  """Batches of {'clips': (batch, views, T, S, S, 3) uint8, 'label', 'video_index', 'valid'}, every video of
  this process's shard once, in order; the last batch may be smaller."""
  views = functools.partial(_sharded_eval_views, spec=spec, shard_index=shard_index, shard_count=shard_count)
  dataset = _shard(source, shard_index, shard_count).map_with_index(views)
  return stream(dataset, num_workers).batch(batch_size, drop_remainder=False)


def shard_size(num_examples: int, shard_index: int, shard_count: int) -> int:
  """How many examples shard `shard_index` of `shard_count` holds (see `_shard`)."""
  return len(range(shard_index, num_examples, shard_count))


def _sharded_eval_views(position: int, example: dict, spec: ClipSpec, shard_index: int, shard_count: int) -> dict:
  return eval_views(example, position * shard_count + shard_index, spec)


def lower_thread_priority(nice: int) -> None:
  """Raises the calling thread's niceness to `nice` (never lowers it). Linux only, where niceness is per
  thread and the threads and processes a thread starts inherit it; elsewhere nothing changes."""
  if not nice or sys.platform != "linux":
    return
  thread = threading.get_native_id()
  try:
    os.setpriority(os.PRIO_PROCESS, thread, max(nice, os.getpriority(os.PRIO_PROCESS, thread)))
  except OSError as e:
    logging.warning("input threads keep the process's CPU priority: %s", e)


class DevicePrefetch:
  """The batches of `batches` passed through `put` (which starts their copy to the devices) by a
  thread that runs up to `size` + 1 batches ahead (`size` queued, one waiting), so that reading,
  copying and the step overlap. That thread runs at niceness `nice`, and so do grain's reading threads
  and workers, which it starts.

  For checkpoints it is an iterator with grain's state interface: `get_state()` is the state of the
  underlying stream after the last batch handed out, not after the ones read ahead, so a resumed run
  reads what an uninterrupted one would; `set_state()` is allowed before the first batch only.
  """

  _DONE = object()

  def __init__(self, batches: Iterator[dict], put: Callable[[dict], Any], size: int = 2, nice: int = 0):
    self._batches, self._put, self._size, self._nice = batches, put, size, nice
    self._queue: queue.Queue | None = None
    self._thread: threading.Thread | None = None
    self._stop = threading.Event()
    self._state = None  # the stream's state after the last batch handed out (None: not started)

  def _stream_state(self):
    return self._batches.get_state() if hasattr(self._batches, "get_state") else None

  def _start(self):
    self._state = self._stream_state()
    self._queue = queue.Queue(maxsize=self._size)
    self._thread = threading.Thread(target=self._read, daemon=True, name="device-prefetch")
    self._thread.start()

  def _read(self):
    lower_thread_priority(self._nice)
    try:
      for batch in self._batches:
        item = (self._put(batch), self._stream_state())
        if not self._offer(item):
          return
      self._offer(self._DONE)
    except BaseException as e:  # handed to the consumer, which raises it
      self._offer(e)

  def _offer(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def __iter__(self):
    return self

  def __next__(self):
    if self._stop.is_set():
      raise RuntimeError("DevicePrefetch is closed")
    if self._queue is None:
      self._start()
    item = self._queue.get()
    if item is self._DONE or isinstance(item, BaseException):
      self._queue.put(item)  # every later call ends the same way
      if item is self._DONE:
        raise StopIteration
      raise item
    batch, self._state = item
    return batch

  def get_state(self) -> bytes:
    return json.dumps(self._stream_state() if self._queue is None else self._state).encode()

  def set_state(self, state: bytes) -> None:
    if self._queue is not None:
      raise RuntimeError("DevicePrefetch.set_state after reading began: restore before the first batch")
    self._batches.set_state(json.loads(state))

  def start_prefetch(self) -> None:  # grain's restore calls it; reading starts with the first batch
    pass

  def close(self, timeout: float = 60.0) -> None:
    """Stops the reading thread (it may hold a batch it could not hand over) and waits up to `timeout`
    seconds for it to end. It first finishes the batch it is reading or copying to the devices: a
    thread still inside that copy when the interpreter exits is killed within C++ code, and the process
    aborts ('FATAL: exception not rethrown') after its work is done."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout)
