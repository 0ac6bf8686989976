"""The two PyTorch key layouts of VideoMAE and the bit-exact mapping to and from the Flax pytree.

A layout is a list of `Rule`s, each tying one Flax leaf to one or more PyTorch keys. The same rules
drive both directions, so the mapping cannot drift between import and export.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import numpy as np

from gardener_jax.models import ModelConfig, VideoMAE
from gardener_jax.models.pretraining import init_pretraining_params
from tools.convert_torch.errors import ConversionError
from tools.convert_torch.read import LazyTensors

ORIGINAL, HF = "original", "hf"


@dataclasses.dataclass(frozen=True)
class Rule:
  """One Flax leaf (a '/'-joined path) and the PyTorch key(s) holding it.

  `kind` says how the layouts differ: 'dense' (Linear (out, in) ↔ kernel (in, out)), 'conv'
  (Conv3d (O, I, T, H, W) ↔ (T, H, W, I, O)) or 'copy'. Several torch keys are concatenated along
  their first (output) axis: HuggingFace splits the fused qkv matrix into query, key and value.
  A rule of a block stack (`stack`: 'blocks', the encoder's, or 'decoder/blocks') has `{i}` in its
  keys and a Flax leaf stacked along depth.
  """

  flax: str
  torch: tuple[str, ...]
  kind: str = "copy"
  stack: str = ""


ENCODER, DECODER = "blocks", "decoder/blocks"


def stack_depth(config: ModelConfig, stack: str) -> int:
  return config.depth if stack == ENCODER else config.decoder.depth


def _linear(flax, torch, stack=""):
  return [Rule(f"{flax}/kernel", (f"{torch}.weight",), "dense", stack),
          Rule(f"{flax}/bias", (f"{torch}.bias",), "copy", stack)]


def _layer_norm(flax, torch, stack=""):
  return [Rule(f"{flax}/scale", (f"{torch}.weight",), "copy", stack),
          Rule(f"{flax}/bias", (f"{torch}.bias",), "copy", stack)]


def _block_rules(layout: str, stack: str, b: str, layer_scale: bool) -> list[Rule]:
  """One stack of blocks whose torch keys start with `b` (holding `{i}`)."""
  if layout == ORIGINAL:
    table = [
        *_layer_norm(f"{stack}/norm1", b + "norm1", stack),
        Rule(f"{stack}/attn/qkv/kernel", (b + "attn.qkv.weight",), "dense", stack),
        Rule(f"{stack}/attn/q_bias", (b + "attn.q_bias",), stack=stack),
        Rule(f"{stack}/attn/v_bias", (b + "attn.v_bias",), stack=stack),
        *_linear(f"{stack}/attn/proj", b + "attn.proj", stack),
        *_layer_norm(f"{stack}/norm2", b + "norm2", stack),
        *_linear(f"{stack}/mlp/fc1", b + "mlp.fc1", stack),
        *_linear(f"{stack}/mlp/fc2", b + "mlp.fc2", stack),
    ]
    if layer_scale:
      table += [Rule(f"{stack}/gamma_1", (b + "gamma_1",), stack=stack),
                Rule(f"{stack}/gamma_2", (b + "gamma_2",), stack=stack)]
    return table
  if layer_scale:
    raise ConversionError("the HuggingFace VideoMAE has no layer scale (gamma_1, gamma_2); fold it first")
  attn = b + "attention.attention."
  return [
      *_layer_norm(f"{stack}/norm1", b + "layernorm_before", stack),
      Rule(f"{stack}/attn/qkv/kernel", tuple(attn + f"{n}.weight" for n in ("query", "key", "value")), "dense", stack),
      Rule(f"{stack}/attn/q_bias", (attn + "q_bias",), stack=stack),
      Rule(f"{stack}/attn/v_bias", (attn + "v_bias",), stack=stack),
      *_linear(f"{stack}/attn/proj", b + "attention.output.dense", stack),
      *_layer_norm(f"{stack}/norm2", b + "layernorm_after", stack),
      *_linear(f"{stack}/mlp/fc1", b + "intermediate.dense", stack),
      *_linear(f"{stack}/mlp/fc2", b + "output.dense", stack),
  ]


def rules(layout: str, config: ModelConfig) -> list[Rule]:
  if layout == ORIGINAL:
    patch, blocks, final_norm, head = "patch_embed.proj", "blocks.{i}.", "norm", "head"
    decoder_blocks = "decoder.blocks.{i}."
  elif layout == HF:
    patch, blocks, final_norm, head = ("videomae.embeddings.patch_embeddings.projection", "videomae.encoder.layer.{i}.",
                                       "videomae.layernorm", "classifier")
    decoder_blocks = "decoder.decoder_layers.{i}."
  else:
    raise ValueError(f"unknown layout {layout!r}")
  table = [Rule("patch_embed/proj/kernel", (f"{patch}.weight",), "conv"),
           Rule("patch_embed/proj/bias", (f"{patch}.bias",)),
           *_block_rules(layout, ENCODER, blocks, config.layer_scale)]
  if not config.use_mean_pooling:
    table += _layer_norm("norm", final_norm)
  elif not config.is_pretraining:  # a pretraining encoder that mean-pools ends without a norm
    table += _layer_norm("fc_norm", "fc_norm")
  if config.num_classes:
    table += _linear("head", head)
  if config.is_pretraining:
    table += [Rule("encoder_to_decoder/kernel", ("encoder_to_decoder.weight",), "dense"),
              Rule("mask_token", ("mask_token",)),
              *_block_rules(layout, DECODER, decoder_blocks, False),
              *_layer_norm("decoder/norm", "decoder.norm"), *_linear("decoder/head", "decoder.head")]
  return table


# ---------------------------------------------------------------------------------------------
# Key normalisation: the many spellings found in the wild → the canonical keys of `rules`.

def detect_layout(keys, source: str = "checkpoint") -> str:
  keys = list(keys)
  if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys):
    return HF
  if any(k.endswith("patch_embed.proj.weight") for k in keys):
    return ORIGINAL
  raise ConversionError(
      f"{source}: unrecognised key layout: expected 'patch_embed.proj.weight' (original VideoMAE release) or "
      f"'embeddings.patch_embeddings.projection.weight' (HuggingFace); first keys: {keys[:5]}"
  )


def canonical_key(layout: str, key: str) -> str:
  if layout == ORIGINAL:
    for prefix in ("module.", "encoder.", "backbone."):
      if key.startswith(prefix) and not key.startswith("encoder_to_decoder"):
        key = key[len(prefix):]
    return key
  if key.startswith(("embeddings.", "encoder.layer.", "layernorm.")):  # VideoMAEModel: no prefix
    key = "videomae." + key
  # Files on the hub (and transformers' save_pretrained) say q_bias / v_bias; transformers ≥ 5 names the
  # same parameters query.bias / value.bias in memory, and some ports save them that way.
  return re.sub(r"attention\.attention\.(query|value)\.bias$", lambda m: f"attention.attention.{m[1][0]}_bias", key)


# ---------------------------------------------------------------------------------------------
# The mapping itself.

def _flax_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  if config.is_pretraining:
    abstract = jax.eval_shape(lambda: init_pretraining_params(config))
  else:
    clips = jax.ShapeDtypeStruct((1, config.num_frames, config.image_size, config.image_size, config.in_channels),
                                 np.float32)
    abstract = jax.eval_shape(VideoMAE(config).init, jax.random.key(0), clips)["params"]
  return {"/".join(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)}


# Axis permutation from the PyTorch layout to the Flax layout, per rule kind.
_TO_FLAX = {"dense": (1, 0), "conv": (2, 3, 4, 1, 0), "copy": None}
_STRIP = 64  # rows per strip when transposing: a strip of both matrices stays in cache


def _copy_transposed(src: np.ndarray, dst: np.ndarray) -> None:
  """dst[...] = src.T for 2-D arrays, strip by strip: ~3.5× faster than numpy's one-shot transpose
  of a 3072 × 768 matrix. A plain copy: every bit is kept."""
  for start in range(0, src.shape[0], _STRIP):
    dst[:, start:start + _STRIP] = src[start:start + _STRIP].T


def _write_flax(kind: str, array: np.ndarray, dst: np.ndarray, part: int) -> None:
  """Writes one torch tensor, the `part`-th of its rule, into its place in the Flax leaf `dst`."""
  if kind == "dense":
    rows = array.shape[0]
    _copy_transposed(array, dst[:, part * rows:(part + 1) * rows])
  elif kind == "conv":
    dst[...] = array.transpose(_TO_FLAX[kind])
  else:
    dst[...] = array


def _read_flax(kind: str, leaf: np.ndarray, parts: int) -> list[np.ndarray]:
  """The inverse of `_write_flax`: one Flax leaf → its `parts` torch tensors (contiguous copies)."""
  if kind == "dense":
    torch_layout = np.empty(leaf.shape[::-1], leaf.dtype)
    _copy_transposed(leaf, torch_layout)
    return np.split(torch_layout, parts)
  if kind == "conv":
    return [np.ascontiguousarray(leaf.transpose(np.argsort(_TO_FLAX[kind])))]
  return [np.array(leaf)]


def _torch_shape(kind: str, flax_shape: tuple[int, ...], parts: int) -> tuple[int, ...]:
  perm = _TO_FLAX[kind]
  shape = [flax_shape[a] for a in np.argsort(perm)] if perm else list(flax_shape)
  shape[0] //= parts
  return tuple(shape)


def nest(flat: dict[str, np.ndarray], sep: str = "/") -> dict:
  tree: dict = {}
  for path, value in flat.items():
    *parents, leaf = path.split(sep)
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def flatten(tree: dict, sep: str = "/", prefix: str = "") -> dict[str, np.ndarray]:
  flat = {}
  for name, value in tree.items():
    path = f"{prefix}{name}"
    if isinstance(value, dict):
      flat.update(flatten(value, sep, path + sep))
    else:
      flat[path] = value
  return flat


def torch_to_flax(tensors: LazyTensors, layout: str, config: ModelConfig, *, source: str = "checkpoint"):
  """Moves the model's weights out of `tensors` (canonical keys) into a Flax params tree
  (jax arrays holding the source's dtypes and bits).

  Consumed keys are popped from `tensors`, so what is left afterwards is what the model does not
  use. Returns (params, mapped) with mapped = [(flax path, torch keys)].
  """
  shapes = _flax_shapes(config)
  flat, mapped = {}, []
  for rule in rules(layout, config):
    flax_shape = shapes[rule.flax]
    block_ids = list(range(stack_depth(config, rule.stack))) if rule.stack else [None]
    expected = _torch_shape(rule.kind, flax_shape[1:] if rule.stack else flax_shape, len(rule.torch))
    leaf = None
    for slot, i in enumerate(block_ids):
      for part, template in enumerate(rule.torch):
        key = template.format(i=i)
        if key not in tensors:
          raise ConversionError(f"{source}: missing key '{key}' (expected shape {expected})")
        if tensors.shape(key) != expected:
          raise ConversionError(f"{source}: key '{key}' has shape {tensors.shape(key)}, expected {expected}")
        array = tensors.pop(key)
        if leaf is None:
          leaf = np.empty(flax_shape, array.dtype)
        if array.dtype != leaf.dtype:
          raise ConversionError(f"{source}: key '{key}' is {array.dtype}, '{rule.torch[0].format(i=block_ids[0])}' "
                                f"is {leaf.dtype}; expected one dtype per parameter")
        _check_finite(array, key, source)
        _write_flax(rule.kind, array, leaf[slot] if rule.stack else leaf, part)
    # Host jax arrays: orbax writes them without another copy of the tree; conversion never needs an accelerator.
    flat[rule.flax] = jax.device_put(leaf, jax.devices("cpu")[0])
    mapped.append((rule.flax, [t.format(i="N") if rule.stack else t for t in rule.torch]))
  return nest(flat), mapped


def flax_to_torch(params: dict, layout: str, config: ModelConfig) -> dict[str, np.ndarray]:
  """The inverse of `torch_to_flax`: canonical torch keys → contiguous numpy arrays, same bits."""
  flat = flatten(params)
  tensors = {}
  for rule in rules(layout, config):
    leaf = np.asarray(flat[rule.flax])
    for i in (range(stack_depth(config, rule.stack)) if rule.stack else [None]):
      parts = _read_flax(rule.kind, leaf[i] if rule.stack else leaf, len(rule.torch))
      for template, part in zip(rule.torch, parts):
        tensors[template.format(i=i)] = part
  return tensors


def _check_finite(array: np.ndarray, key: str, source: str):
  if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
    bad = array.size - int(np.isfinite(array).sum())
    if bad:
      raise ConversionError(f"{source}: key '{key}' holds {bad} non-finite values (NaN or inf); expected finite weights")
