"""Video-level evaluation that is right on any number of hosts and videos.

Hosts may hold different numbers of videos (shards are `source[i::P]`), so every process runs the same
number of steps over batches of the same size: its own videos, then padding. Each entry carries a
validity flag — padding and videos whose frames cannot be decoded are invalid — and the metrics count
every valid video exactly once. Every process gathers the same per-video results, so every process
computes the same metrics (the best-checkpoint decision depends on them).

What is computed per video is the evaluator's: the softmax averaged over the clip × crop views
(classification: WAR, UAR, top-1/5), or the masked-reconstruction loss averaged over them (pretraining).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from gardener_jax.data import input_pipeline, sampling
from gardener_jax.models import VideoMAE
from gardener_jax.models.pretraining import VideoMAEPretraining, masked_per_clip, tube_masks
from gardener_jax.sharding import AXIS, global_batch


def video_metrics(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """WAR (accuracy over videos), UAR (mean per-class recall), top-1 and top-5, in %."""
  top = np.argsort(-probabilities, axis=1)
  correct = top[:, 0] == labels
  recalls = [correct[labels == c].mean() for c in range(num_classes) if np.any(labels == c)]

  def percent(hits):  # 100 · count / n: 51 of 80 is 63.75, not 63.749999…
    return 100 * int(np.sum(hits)) / len(hits)

  top5 = np.any(top[:, :5] == labels[:, None], axis=1)
  return {"war": percent(correct), "uar": 100 * float(np.mean(recalls)), "top1": percent(correct),
          "top5": percent(top5), "videos": int(len(labels))}


def _padded(batch: dict, size: int) -> dict:
  """`batch` filled up to `size` entries with invalid zeros."""
  missing = size - len(batch["valid"])
  return {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) if missing else v
          for k, v in batch.items()}


PerVideo = Callable[..., jax.Array]  # (params, uint8 clips (b, views, T, H, W, C), video_index (b,)) → (b, ...)
Summary = Callable[[np.ndarray, np.ndarray], dict]  # (per-video outputs, labels) of the valid videos → metrics


@dataclasses.dataclass(frozen=True)
class Selection:
  """Which metric `best/` follows, and whether higher or lower is better."""
  metric: str
  mode: str  # 'max' or 'min'


class Evaluator:
  """`Evaluator(...)(params)` → the split's metrics, plus `videos`, `skipped` (unreadable), `split`."""

  def __init__(self, mesh, source, pipelines: input_pipeline.Pipelines, split: str, per_video: PerVideo,
               summarize: Summary, selection: Selection):
    self.mesh, self.source, self.pipelines, self.split = mesh, source, pipelines, split
    self.summarize, self.selection = summarize, selection
    processes, local_devices = jax.process_count(), jax.local_device_count()
    per_process = math.ceil(pipelines.eval_batch_size / processes)
    self.local_batch = math.ceil(per_process / local_devices) * local_devices
    largest_shard = input_pipeline.shard_size(len(source), 0, processes)  # shard 0 is never smaller
    self.steps = math.ceil(largest_shard / self.local_batch)
    self._fn = jax.jit(jax.shard_map(per_video, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=P(AXIS)))

  def _padding(self) -> dict:
    """A batch of invalid zeros, for a process whose videos have run out."""
    n = self.local_batch
    return {"clips": np.zeros((n, *self.pipelines.eval_spec.eval_views_shape), np.uint8),
            "label": np.zeros(n, np.int32),
            "video_index": np.zeros(n, np.int32), "valid": np.zeros(n, bool)}

  def _local_batches(self):
    """This process's `steps` batches: its videos, then padding."""
    batches = iter(self.pipelines.eval(self.source, self.local_batch))
    for _ in range(self.steps):
      batch = next(batches, None)
      yield self._padding() if batch is None else _padded(batch, self.local_batch)

  def __call__(self, params) -> dict:
    start = time.perf_counter()
    # The whole batch goes to the devices. Labels and flags go too, although only the host reads them: gathered
    # from the same global arrays as the outputs, they come back in the same order, whatever order the mesh
    # holds the processes in (on TPU pods `make_mesh` interleaves the hosts along the axis).
    batches = input_pipeline.DevicePrefetch(self._local_batches(), functools.partial(global_batch, self.mesh),
                                            nice=self.pipelines.input_nice)
    gathered = []
    try:
      for batch in batches:
        outputs = self._fn(params, batch["clips"], batch["video_index"])
        gathered.append(multihost_utils.process_allgather(
            {"outputs": outputs, **{k: batch[k] for k in ("label", "video_index", "valid")}}, tiled=True))
    finally:
      batches.close()
    results = {k: np.concatenate([np.asarray(g[k]) for g in gathered]) for k in gathered[0]}
    valid = results["valid"]
    if not valid.any():
      raise ValueError(f"{self.split}: none of its {len(self.source)} videos could be decoded")
    if len(set(results["video_index"][valid].tolist())) != int(valid.sum()):
      raise RuntimeError(f"{self.split}: a video was evaluated twice; the process shards overlap")
    metrics = self.summarize(results["outputs"][valid], results["label"][valid])
    views = self.pipelines.eval_spec.eval_views_shape[0]
    metrics.update(videos=int(valid.sum()), split=self.split,
                   skipped=len(self.source) - int(valid.sum()),  # unreadable videos
                   clips_per_sec=views * int(valid.sum()) / max(time.perf_counter() - start, 1e-9))
    return metrics


def _views(clips):
  b, views = clips.shape[:2]
  return clips.reshape(b * views, *clips.shape[2:]), (b, views)


def _video_probabilities(params, clips, video_index, *, model: VideoMAE):
  del video_index
  flat, (b, views) = _views(clips)
  logits = model.apply({"params": params}, sampling.normalize(flat).astype(model.dtype))
  return jax.nn.softmax(logits.astype(jnp.float32)).reshape(b, views, -1).mean(axis=1)


def classification_evaluator(mesh, model: VideoMAE, source, pipelines, num_classes: int, split: str) -> Evaluator:
  """Each video's prediction is the mean softmax over its views; metrics WAR, UAR, top-1, top-5 (%)."""
  return Evaluator(mesh, source, pipelines, split, functools.partial(_video_probabilities, model=model),
                   lambda probabilities, labels: video_metrics(probabilities, labels, num_classes),
                   Selection("war", "max"))


def video_tube_masks(seed: int, video_index, views: int, config, mask_ratio: float) -> jax.Array:
  """(videos, views, tokens) tube masks fixed by `seed` and each video's index in its split."""
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.asarray(video_index))
  return jax.vmap(lambda key: tube_masks(key, views, config, mask_ratio))(keys)


def _video_reconstruction_loss(params, clips, video_index, *, model: VideoMAEPretraining, mask_ratio: float,
                               seed: int):
  flat, (b, views) = _views(clips)
  masks = video_tube_masks(seed, video_index, views, model.config, mask_ratio).reshape(b * views, -1)
  out = model.apply({"params": params}, sampling.normalize(flat), masks,  # float32, as in training
                    num_masked=masked_per_clip(model.config, mask_ratio))
  per_clip = jnp.mean((out["pred"] - out["target"]) ** 2, axis=(1, 2))
  return per_clip.reshape(b, views).mean(axis=1)


def reconstruction_evaluator(mesh, model: VideoMAEPretraining, source, pipelines, mask_ratio: float, seed: int,
                             split: str) -> Evaluator:
  """The masked-reconstruction loss per video (its views averaged), each video's tube masks fixed by
  `seed` and its index, so every evaluation scores the same masked tubes."""
  per_video = functools.partial(_video_reconstruction_loss, model=model, mask_ratio=mask_ratio, seed=seed)
  return Evaluator(mesh, source, pipelines, split, per_video,
                   lambda losses, labels: {"loss": float(np.mean(losses))}, Selection("loss", "min"))
