"""The optimiser of the finetuning recipes (SPEC §5): AdamW, linear warm-up then cosine to zero,
layer-wise learning-rate decay, gradient clipping, no weight decay on norms, biases and layer scale,
optional gradient accumulation — optax transformations chained."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def layer_ids(params, depth: int):
  """Per leaf, the layer it belongs to: 0 patch embedding, 1..depth the blocks (an array along the
  stacked depth axis, or block i's number in the `per_block` layout), depth + 1 the final norm and the head."""
  def layer(path, leaf):
    top = path[0].key
    if top == "patch_embed":
      return np.zeros((), np.int32)
    if top == "blocks" and path[1].key.isdigit():
      return np.full((), int(path[1].key) + 1, np.int32)
    if top == "blocks":
      return np.arange(1, depth + 1, dtype=np.int32).reshape((depth,) + (1,) * (np.ndim(leaf) - 1))
    return np.full((), depth + 1, np.int32)
  return jax.tree_util.tree_map_with_path(layer, params)


def layer_decay_scales(params, depth: int, decay: float):
  """BEiT/VideoMAE layer decay: layer l's learning rate is scaled by decay ** (depth + 1 − l)."""
  return jax.tree.map(lambda ids: (decay ** (depth + 1 - ids)).astype(np.float32), layer_ids(params, depth))


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies each update by a fixed array of the tree `scales` (broadcast along stacked axes)."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates,
                                                                    scales))


def decay_mask(params):
  """Weight decay on matrices and conv kernels only: not on norms, biases, q/v biases or layer scale."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def make_optimizer(optim, params, depth: int, num_updates: int):
  """(transformation, learning-rate schedule). `optim`: lr, warmup_steps, end_lr (where the cosine ends;
  default 0), weight_decay, b1, b2, clip_norm (0: off), layer_decay (1: off), accumulate (micro-batches
  per update)."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.lr, warmup_steps=min(optim.warmup_steps, max(num_updates - 1, 0)),
      decay_steps=max(num_updates, 1), end_value=optim.get("end_lr", 0.0))
  chain = [optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm else []
  chain += [optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=1e-8),
            optax.add_decayed_weights(optim.weight_decay, mask=decay_mask(params))]
  if optim.layer_decay < 1:
    chain.append(scale_by_tree(layer_decay_scales(params, depth, optim.layer_decay)))
  chain.append(optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*chain)
  if optim.accumulate > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=optim.accumulate)
  return tx, schedule


def soft_targets(labels, num_classes: int, smoothing: float):
  return optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing) if smoothing else jax.nn.one_hot(
      labels, num_classes)


def mix(rng, clips, targets, mixup_alpha: float, cutmix_alpha: float, switch_prob: float = 0.5,
        reverse: Callable = lambda x: x[::-1]):
  """Mixup or CutMix (one box for every frame of a clip) between a batch and its reverse, as in the
  VideoMAE recipe; returns (clips, targets). `reverse` reverses a batch (under `shard_map`, the whole
  batch's reverse, of which this device holds a share: `train.batch_reversed`)."""
  if not (mixup_alpha or cutmix_alpha):
    return clips, targets
  choose, beta_rng, box_rng = jax.random.split(rng, 3)
  use_cutmix = (jax.random.uniform(choose) < switch_prob) if (mixup_alpha and cutmix_alpha) else bool(cutmix_alpha)
  alpha = jnp.where(use_cutmix, cutmix_alpha or 1.0, mixup_alpha or 1.0)
  lam = jax.random.beta(beta_rng, alpha, alpha)
  height, width = clips.shape[2:4]
  cut_h, cut_w = (height * jnp.sqrt(1 - lam)).astype(jnp.int32), (width * jnp.sqrt(1 - lam)).astype(jnp.int32)
  centre = jax.random.randint(box_rng, (2,), 0, jnp.array([height, width]))
  top, bottom = jnp.clip(centre[0] - cut_h // 2, 0, height), jnp.clip(centre[0] + cut_h // 2, 0, height)
  left, right = jnp.clip(centre[1] - cut_w // 2, 0, width), jnp.clip(centre[1] + cut_w // 2, 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  box_lam = 1 - jnp.sum(box) / (height * width)
  flipped = reverse(clips)
  cut = jnp.where(box[None, None, :, :, None], flipped, clips)
  mixed = lam * clips + (1 - lam) * flipped
  clips = jnp.where(use_cutmix, cut, mixed.astype(clips.dtype))
  lam = jnp.where(use_cutmix, box_lam, lam)
  return clips, lam * targets + (1 - lam) * reverse(targets)
