"""Video-level evaluation that is right on any number of hosts and videos.

Hosts may hold different numbers of videos (shards are `source[i::P]`), so every process runs the same
number of steps over batches of the same size: its own videos, then padding. Each entry carries a
validity flag — padding and videos whose frames cannot be decoded are invalid — and the metrics count
every valid video exactly once. A video's prediction is the mean of the softmax over its clip × crop
views. Every process gathers the same per-video results, so every process computes the same metrics
(the best-checkpoint decision depends on them).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from gardener_jax.data import input_pipeline
from gardener_jax.models import VideoMAE
from gardener_jax.sharding import AXIS, global_batch


def video_metrics(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """WAR (accuracy over videos), UAR (mean per-class recall), top-1 and top-5, in %."""
  top = np.argsort(-probabilities, axis=1)
  correct = top[:, 0] == labels
  recalls = [correct[labels == c].mean() for c in range(num_classes) if np.any(labels == c)]

  def percent(hits):  # 100 · count / n: 51 of 80 is 63.75, not 63.749999…
    return 100 * int(np.sum(hits)) / len(hits)

  top5 = np.any(top[:, :5] == labels[:, None], axis=1)
  return {"war": percent(correct), "uar": 100 * float(np.mean(recalls)), "top1": percent(correct), "top5": percent(top5),
          "videos": int(len(labels))}


def _video_probabilities(params, clips, *, model: VideoMAE):
  b, views = clips.shape[:2]
  logits = model.apply({"params": params}, clips.reshape(b * views, *clips.shape[2:]).astype(model.dtype))
  return jax.nn.softmax(logits.astype(jnp.float32)).reshape(b, views, -1).mean(axis=1)


def _padded(batch: dict, size: int) -> dict:
  """`batch` filled up to `size` entries with invalid zeros."""
  missing = size - len(batch["valid"])
  return {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) if missing else v
          for k, v in batch.items()}


class Evaluator:
  """Evaluates params on one split: `Evaluator(...)(params)` → WAR, UAR, top-1/5, videos, skipped."""

  def __init__(self, mesh, model: VideoMAE, source, pipelines: input_pipeline.Pipelines, num_classes: int,
               split: str):
    self.mesh, self.source, self.pipelines, self.num_classes, self.split = mesh, source, pipelines, num_classes, split
    processes, local_devices = jax.process_count(), jax.local_device_count()
    per_process = math.ceil(pipelines.eval_batch_size / processes)
    self.local_batch = math.ceil(per_process / local_devices) * local_devices
    largest_shard = input_pipeline.shard_size(len(source), 0, processes)  # shard 0 is never smaller
    self.steps = math.ceil(largest_shard / self.local_batch)
    self._fn = jax.jit(jax.shard_map(functools.partial(_video_probabilities, model=model), mesh=mesh,
                                     in_specs=(P(), P(AXIS)), out_specs=P(AXIS)))

  def _padding(self) -> dict:
    """A batch of invalid zeros, for a process whose videos have run out."""
    spec, n = self.pipelines.eval_spec, self.local_batch
    clips = (spec.num_clips * spec.num_crops, spec.num_frames, spec.image_size, spec.image_size, 3)
    return {"clips": np.zeros((n, *clips), np.float32), "label": np.zeros(n, np.int32),
            "video_index": np.zeros(n, np.int32), "valid": np.zeros(n, bool)}

  def __call__(self, params) -> dict:
    start = time.perf_counter()
    batches = iter(self.pipelines.eval(self.source, self.local_batch))
    gathered = []
    for _ in range(self.steps):
      batch = next(batches, None)
      local = self._padding() if batch is None else _padded(batch, self.local_batch)
      probabilities = self._fn(params, global_batch(self.mesh, {"clips": local["clips"]})["clips"])
      gathered.append(multihost_utils.process_allgather(
          {"probabilities": probabilities, **{k: local[k] for k in ("label", "video_index", "valid")}}, tiled=True))
    results = {k: np.concatenate([np.asarray(g[k]) for g in gathered]) for k in gathered[0]}
    valid = results["valid"]
    if not valid.any():
      raise ValueError(f"{self.split}: none of its {len(self.source)} videos could be decoded")
    if len(set(results["video_index"][valid].tolist())) != int(valid.sum()):
      raise RuntimeError(f"{self.split}: a video was evaluated twice; the process shards overlap")
    metrics = video_metrics(results["probabilities"][valid], results["label"][valid], self.num_classes)
    views = self.pipelines.eval_spec.num_clips * self.pipelines.eval_spec.num_crops
    metrics.update(split=self.split, skipped=len(self.source) - int(valid.sum()),  # unreadable videos
                   clips_per_sec=views * metrics["videos"] / max(time.perf_counter() - start, 1e-9))
    return metrics
