"""Flax (Linen) VideoMAE encoder with a classification head.

Block parameters are stacked along a leading depth axis (`nn.scan`), so a pruned model is a gather
along that axis and a per-block statistic is a map over it. Training may keep them one subtree per block
instead (`scan_blocks=False`, `per_block`), which the loop turns back into the stacked layout it saves.
Parameter names follow the original PyTorch release (`blocks/attn/qkv`, `blocks/mlp/fc1`, ...) to keep the
converter readable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gardener_jax.models.config import ModelConfig

Dtype = Any
Initializer = Callable[..., jax.Array]
_dense_init = nn.initializers.truncated_normal(0.02)


@functools.lru_cache(maxsize=16)
def sinusoid_position_table(num_tokens: int, width: int) -> np.ndarray:
  """VideoMAE's fixed 1-D sinusoid table, (num_tokens, width) float32; never stored in checkpoints.

  Computed in float64 and rounded once to float32, as the PyTorch implementations do.
  """
  position = np.arange(num_tokens, dtype=np.float64)[:, None]
  channel = np.arange(width)
  angle = position / np.power(10000, 2 * (channel // 2) / width)
  angle[:, 0::2] = np.sin(angle[:, 0::2])
  angle[:, 1::2] = np.cos(angle[:, 1::2])
  return angle.astype(np.float32)


def drop_path(x, rate, deterministic: bool, rng_module: nn.Module):
  """Stochastic depth: zero a sample's residual branch with probability `rate`, rescale the rest.
  (`deterministic` also when the model's drop_path_rate is 0: `rate` is traced, the config is not.)"""
  if deterministic:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng_module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class PatchEmbed(nn.Module):
  """Tubelet embedding: a Conv3d whose kernel equals its stride; tokens come out in (t, h, w) order."""

  config: ModelConfig
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = _dense_init
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, clips):
    c = self.config
    window = (c.tubelet_size, c.patch_size, c.patch_size)
    x = nn.Conv(c.width, window, strides=window, padding="VALID", dtype=self.dtype, kernel_init=self.kernel_init,
                bias_init=self.bias_init, name="proj")(clips)
    return x.reshape(x.shape[0], -1, c.width)


def _per_head(qkv, scale: float):
  """(batch, tokens, 3, heads, dim) → q · scale, k, v as (batch · heads, tokens, dim) each."""
  b, n, _, h, d = qkv.shape
  q, k, v = qkv.transpose(2, 0, 3, 1, 4).reshape(3, b * h, n, d)
  return q * scale, k, v


def _heads_first(x):
  """(batch, tokens, heads, dim) → (batch · heads, tokens, dim)."""
  b, n, h, d = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b * h, n, d)


def _merge_heads(out, qkv_shape):
  """(batch · heads, tokens, dim) → (batch, tokens, heads, dim)."""
  b, n, _, h, d = qkv_shape
  return out.reshape(b, h, n, d).transpose(0, 2, 1, 3)


def _qkv_gradient(dq, dk, dv, scale: float, qkv_shape):
  """The gradients of `_per_head`'s q · scale, k and v → the gradient of its (batch, tokens, 3, heads, dim)
  input, as one array: three gradients scattered into zeros and added cost ~0.1 s per ViT-B step on CPU."""
  b, n, _, h, d = qkv_shape
  return jnp.stack([dq * scale, dk, dv]).reshape(3, b, h, n, d).transpose(1, 3, 0, 2, 4)


def _split_heads(qkv, scale: float):
  """(batch, tokens, 3, heads, dim) → q · scale, k, v as (batch, tokens, heads, dim) each."""
  return qkv[..., 0, :, :] * scale, qkv[..., 1, :, :], qkv[..., 2, :, :]


def _tile_forward(q, k, v):
  """softmax(q kᵀ) v for a tile of queries (..., queries, dim) against all keys and values (..., keys, dim),
  normalising after the value product; also each query's score max and exponential sum, which is all the
  backward pass keeps."""
  scores = jnp.matmul(q, jnp.matrix_transpose(k)).astype(jnp.float32)
  row_max = scores.max(axis=-1, keepdims=True)
  unnormalised = jnp.exp(scores - row_max)
  row_sum = unnormalised.sum(axis=-1, keepdims=True)
  return (jnp.matmul(unnormalised.astype(v.dtype), v) / row_sum).astype(v.dtype), row_max, row_sum


def _tile_backward(q, k, v, out, row_max, row_sum, grad_out):
  """Flash attention's backward pass for one tile of queries: it rebuilds their softmax from the row max
  and sum and returns their gradient, and their parts of k's and v's."""
  p = jnp.exp(jnp.matmul(q, jnp.matrix_transpose(k)).astype(jnp.float32) - row_max) / row_sum
  dv = jnp.matmul(jnp.matrix_transpose(p.astype(grad_out.dtype)), grad_out)
  dp = jnp.matmul(grad_out, jnp.matrix_transpose(v)).astype(jnp.float32)
  delta = jnp.sum(grad_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  ds = (p * (dp - delta)).astype(q.dtype)
  return jnp.matmul(ds, k), jnp.matmul(jnp.matrix_transpose(ds), q), dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def attention_per_head(qkv, scale: float):
  """softmax(scale · q kᵀ) v, one (batch, head) pair at a time, normalising after the value product.

  On CPU this is ~3.5× faster than one batched einsum for ViT-B's 1568 tokens: a head's 1568²
  score matrix stays in cache, and dividing the (tokens, head_dim) output is cheaper than dividing
  the (tokens, tokens) scores. The backward pass is flash attention's: it keeps only the output and
  each row's max and sum, and rebuilds a head's probabilities from them. It takes q, k and v as the
  one (batch, tokens, 3, heads, head_dim) array the qkv projection makes and returns their gradient
  as one array too. Returns (batch, tokens, heads, head_dim).
  """
  return _per_head_forward(qkv, scale)[0]


def _per_head_forward(qkv, scale):
  out, row_max, row_sum = jax.lax.map(lambda args: _tile_forward(*args), _per_head(qkv, scale))
  return _merge_heads(out, qkv.shape), (qkv, out, row_max, row_sum)


def _per_head_backward(scale, residuals, grad_out):
  qkv, out, row_max, row_sum = residuals
  grad_out = _heads_first(grad_out)
  dq, dk, dv = jax.lax.map(lambda args: _tile_backward(*args), (*_per_head(qkv, scale), out, row_max, row_sum,
                                                                grad_out))
  return (_qkv_gradient(dq, dk, dv, scale, qkv.shape).astype(qkv.dtype),)


attention_per_head.defvjp(_per_head_forward, _per_head_backward)


def _query_blocks(x, count: int):
  """(batch · heads, tokens, ...) → (count, batch · heads, ⌈tokens / count⌉, ...): the tokens cut into
  `count` equal blocks, the last zero-padded."""
  size = -(-x.shape[1] // count)
  x = jnp.pad(x, [(0, 0), (0, count * size - x.shape[1])] + [(0, 0)] * (x.ndim - 2))
  return jnp.moveaxis(x.reshape(x.shape[0], count, size, *x.shape[2:]), 1, 0)


def _join_blocks(x, tokens: int):
  """The inverse of `_query_blocks`, the padding dropped."""
  return jnp.moveaxis(x, 0, 1).reshape(x.shape[1], -1, *x.shape[3:])[:, :tokens]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def attention_blockwise(qkv, scale: float, query_block: int = 512):
  """`attention_per_head`'s result with every head at once and the queries in blocks of at most
  `query_block` against all keys (tokens cut into equal blocks, the last padded). Its forward and
  backward passes hold one block's scores at a time, (batch · heads, block, tokens), and the backward
  pass keeps what flash attention keeps: memory grows with tokens, not tokens². For accelerators where no
  flash kernel applies (float32 on GPUs: XLA's attention keeps every (tokens, tokens) probability matrix
  for the backward pass, in float32). Takes and returns what `attention_per_head` does."""
  return _blockwise_forward(qkv, scale, query_block)[0]


def _blockwise_forward(qkv, scale, query_block):
  q, k, v = _per_head(qkv, scale)
  count = -(-q.shape[1] // query_block)
  out, row_max, row_sum = jax.lax.map(lambda q_block: _tile_forward(q_block, k, v), _query_blocks(q, count))
  return _merge_heads(_join_blocks(out, q.shape[1]), qkv.shape), (qkv, out, row_max, row_sum)


def _blockwise_backward(scale, query_block, residuals, grad_out):
  qkv, out, row_max, row_sum = residuals  # by query block; padded rows have grad_out 0 and add nothing
  q, k, v = _per_head(qkv, scale)
  grad_out = _heads_first(grad_out)

  def one_block(grads_kv, block):
    q_block, *rest = block
    dq, dk, dv = _tile_backward(q_block, k, v, *rest)
    dk_total, dv_total = grads_kv
    return (dk_total + dk.astype(jnp.float32), dv_total + dv.astype(jnp.float32)), dq

  zeros = jnp.zeros(k.shape, jnp.float32)
  blocks = (_query_blocks(q, out.shape[0]), out, row_max, row_sum, _query_blocks(grad_out, out.shape[0]))
  (dk, dv), dq = jax.lax.scan(one_block, (zeros, zeros), blocks)
  return (_qkv_gradient(_join_blocks(dq, q.shape[1]), dk, dv, scale, qkv.shape).astype(qkv.dtype),)


attention_blockwise.defvjp(_blockwise_forward, _blockwise_backward)


def default_attention(dtype) -> str:
  """The attention implementation `Attention` uses unless told: 'per_head' on CPUs; on GPUs 'fused' (cuDNN's
  flash attention) for 16-bit compute and 'blockwise' otherwise (cuDNN's serves 16-bit inputs only); 'fused'
  on other backends (TPUs)."""
  backend = jax.default_backend()
  if backend == "cpu":
    return "per_head"
  if backend == "gpu" and jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
    return "blockwise"
  return "fused"


class Attention(nn.Module):
  """Multi-head self-attention with one fused qkv matrix, learned q and v biases, zero k bias.

  `implementation` (None: `default_attention`): 'per_head' (see `attention_per_head`), 'blockwise' (see
  `attention_blockwise`), 'fused' (`jax.nn.dot_product_attention`: cuDNN flash attention on GPUs where it
  applies) or 'einsum' (materialised softmax; used whenever attention dropout is active).
  """

  config: ModelConfig
  norm: LayerNorm  # the block's norm1, applied to x first (`NormedDense`)
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  implementation: str | None = None
  kernel_init: Initializer = _dense_init

  @nn.compact
  def __call__(self, x):
    c = self.config
    q_bias = self.param("q_bias", nn.initializers.zeros, (c.width,))
    v_bias = self.param("v_bias", nn.initializers.zeros, (c.width,))
    qkv_bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]).astype(self.dtype)
    qkv = NormedDense(3 * c.width, self.norm, use_bias=False, dtype=self.dtype, kernel_init=self.kernel_init,
                      name="qkv")(x)
    qkv = (qkv + qkv_bias).reshape(*x.shape[:-1], 3, c.num_heads, c.head_dim)
    implementation = self.implementation or default_attention(self.dtype)
    if c.attention_dropout_rate and not self.deterministic:
      implementation = "einsum"
    scale = c.head_dim**-0.5
    if implementation == "per_head":
      out = attention_per_head(qkv, scale)
    elif implementation == "blockwise":
      out = attention_blockwise(qkv, scale)
    elif implementation == "fused":
      q, k, v = _split_heads(qkv, scale)
      # cuDNN's flash attention where it applies (a GPU, 16-bit inputs): no score matrix in memory.
      flash = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
      out = jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation="cudnn" if flash else None)
    elif implementation == "einsum":
      q, k, v = _split_heads(qkv, scale)
      weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32), axis=-1)
      weights = nn.Dropout(c.attention_dropout_rate)(weights.astype(self.dtype), deterministic=self.deterministic)
      out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    else:
      raise ValueError(f"unknown attention implementation {implementation!r}; use per_head, blockwise, fused or "
                       "einsum")
    return nn.Dense(c.width, dtype=self.dtype, kernel_init=self.kernel_init, name="proj")(out.reshape(x.shape))


@jax.custom_vjp
def gelu(x):
  """Exact (erf) GELU whose backward pass keeps only its input: autodiff of `jax.nn.gelu` also stores
  erf and exp intermediates, two more (tokens, mlp_dim) arrays per block (~440 MB for ViT-B)."""
  return jax.nn.gelu(x, approximate=False)


def _gelu_forward(x):
  return gelu(x), x


def _gelu_backward(x, grad):
  x32 = x.astype(jnp.float32)
  cdf = 0.5 * (1.0 + jax.lax.erf(x32 * np.float32(1 / np.sqrt(2))))
  pdf = jnp.exp(-0.5 * x32 * x32) * np.float32(1 / np.sqrt(2 * np.pi))
  return ((grad.astype(jnp.float32) * (cdf + x32 * pdf)).astype(x.dtype),)


gelu.defvjp(_gelu_forward, _gelu_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, bias, epsilon: float):
  """LayerNorm over the last axis, statistics in float32. Its backward pass keeps the normalised
  input and 1/σ only (autodiff keeps more (tokens, width) arrays: ~220 MB more for ViT-B)."""
  return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _layer_norm_forward(x, scale, bias, epsilon):
  x32 = x.astype(jnp.float32)
  centred = x32 - x32.mean(axis=-1, keepdims=True)
  inv_std = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
  normalised = centred * inv_std
  return _scale_and_shift(normalised, scale, bias, x.dtype), (normalised.astype(x.dtype), inv_std, scale, bias)


def _scale_and_shift(normalised, scale, bias, dtype):
  return (normalised.astype(jnp.float32) * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)


def _layer_norm_backward(epsilon, residuals, grad):
  normalised, inv_std, scale, bias = residuals
  g, n = grad.astype(jnp.float32), normalised.astype(jnp.float32)
  gs = g * scale.astype(jnp.float32)
  dx = inv_std * (gs - gs.mean(axis=-1, keepdims=True) - n * jnp.mean(gs * n, axis=-1, keepdims=True))
  batch_axes = tuple(range(g.ndim - 1))
  return (dx.astype(normalised.dtype), jnp.sum(g * n, axis=batch_axes).astype(scale.dtype),
          jnp.sum(g, axis=batch_axes).astype(bias.dtype))


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


def _project(x, kernel):
  """`nn.Dense`'s product (no bias): x's last axis against the kernel's first."""
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def normalized_projection(x, scale, bias, kernel, epsilon: float):
  """`layer_norm(x, scale, bias, epsilon)` times `kernel`, whose backward pass keeps what the norm keeps
  (the normalised x and 1/σ) but not the norm's output, the projection's input: it rebuilds that in one
  elementwise pass. Autodiff keeps both, one more (tokens, width) array per norm (110 MB for ViT-B's 24
  norms at batch 1). For 16-bit x the rebuilt input starts from the normalised x rounded to x's dtype."""
  return _normalized_projection_forward(x, scale, bias, kernel, epsilon)[0]


def _normalized_projection_forward(x, scale, bias, kernel, epsilon):
  y, norm_residuals = _layer_norm_forward(x, scale, bias, epsilon)
  return _project(y, kernel), (norm_residuals, kernel)


def _normalized_projection_backward(epsilon, residuals, grad):
  norm_residuals, kernel = residuals
  normalised, _, scale, bias = norm_residuals
  _, project_backward = jax.vjp(_project, _scale_and_shift(normalised, scale, bias, normalised.dtype), kernel)
  grad_y, grad_kernel = project_backward(grad)
  return (*_layer_norm_backward(epsilon, norm_residuals, grad_y), grad_kernel)


normalized_projection.defvjp(_normalized_projection_forward, _normalized_projection_backward)


class LayerNorm(nn.Module):
  """`nn.LayerNorm`'s parameters (scale, bias) and result, with `layer_norm`'s leaner backward pass;
  given a `kernel`, the result times it (`normalized_projection`)."""

  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, kernel=None):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    if kernel is None:
      return layer_norm(x.astype(self.dtype), scale, bias, self.epsilon)
    return normalized_projection(x.astype(self.dtype), scale, bias, kernel.astype(self.dtype), self.epsilon)


class NormedDense(nn.Module):
  """`nn.Dense` (the same parameters and result) applied to `norm(x)`, through `normalized_projection`.
  `norm` belongs to the module that made it (the block): its parameters stay there."""

  features: int
  norm: LayerNorm
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = _dense_init

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    y = self.norm(x, kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class Mlp(nn.Module):
  config: ModelConfig
  norm: LayerNorm  # the block's norm2, applied to x first
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = _dense_init

  @nn.compact
  def __call__(self, x):
    hidden = NormedDense(self.config.mlp_dim, self.norm, dtype=self.dtype, kernel_init=self.kernel_init, name="fc1")(x)
    fc2 = nn.Dense(self.config.width, dtype=self.dtype, kernel_init=self.kernel_init, name="fc2")
    # gelu(hidden), fc2's input, is recomputed in the backward pass instead of stored: one elementwise
    # pass buys back a (tokens, mlp_dim) array per block (220 MB for ViT-B at batch 1).
    return nn.remat(lambda dense, h: dense(gelu(h)), prevent_cse=False)(fc2, hidden)


class Block(nn.Module):
  """Pre-norm transformer block; `__call__(x, drop_path_rate) -> (x, None)` is scanned over depth."""

  config: ModelConfig
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  attention: str | None = None
  kernel_init: Initializer = _dense_init  # of its linear layers' weights

  @nn.compact
  def __call__(self, x, drop_path_rate):
    c = self.config
    norm = functools.partial(LayerNorm, epsilon=c.norm_eps, dtype=self.dtype)
    branches = (
        ("norm1", lambda n: Attention(c, n, self.deterministic, self.dtype, self.attention, self.kernel_init,
                                      name="attn"), "gamma_1"),
        ("norm2", lambda n: Mlp(c, n, self.dtype, self.kernel_init, name="mlp"), "gamma_2"),
    )
    for norm_name, branch, gamma_name in branches:
      y = branch(norm(name=norm_name))(x)  # the branch's first projection applies the norm
      if c.layer_scale:
        y = y * self.param(gamma_name, nn.initializers.constant(0.1), (c.width,)).astype(self.dtype)
      x = x + drop_path(y, drop_path_rate, self.deterministic or not c.drop_path_rate, self)
    self.sow("intermediates", "hidden_state", x)  # kept only when applied with mutable=["intermediates"]
    return x, None


def _block_type(config: ModelConfig):
  return nn.remat(Block, prevent_cse=False) if config.remat else Block


class BlockSequence(Block):
  """`config.depth` blocks (with `Block`'s fields) applied one after another, each with its own parameters
  (`<name>/0`, `<name>/1`, ...): `nn.scan`'s alternative. On CPU, a step that loops over scanned blocks
  copies each block's weights out of the stacked arrays and its weight gradients back in, in the forward and
  the backward pass; here every block reads and writes its own buffers (see `per_block`). Each block is
  one `nn.jit` call, so JAX traces and lowers one block, not `depth` copies of it: the ViT-B
  masked-pretraining step's process held 50 MB less (the traced program JAX caches) and compiled sooner."""

  @nn.compact
  def __call__(self, x, drop_path_rates):
    block = nn.jit(_block_type(self.config))
    for i in range(self.config.depth):
      x, _ = block(self.config, self.deterministic, self.dtype, self.attention, self.kernel_init, name=str(i))(
          x, drop_path_rates[i])
    return x, None


def stacked_blocks(config: ModelConfig, *, train: bool, dtype, attention: str | None, name: str, scan: bool = True,
                   kernel_init: Initializer = _dense_init):
  """`config.depth` blocks as one callable on (batch, tokens, width); drop path rises from 0 to
  `config.drop_path_rate`. `scan`: their parameters stacked along a leading depth axis under `name`
  (`nn.scan`, the checkpoints' layout), else one subtree per block (`BlockSequence`, the `per_block`
  layout). `kernel_init` initialises their linear layers' weights. Call it inside a module's compact
  method: the blocks become that module's child."""
  if scan:
    layer = nn.scan(_block_type(config), variable_axes={"params": 0, "intermediates": 0},
                    split_rngs={"params": True, "dropout": True}, in_axes=0, length=config.depth)
  else:
    layer = BlockSequence
  layer = layer(config, deterministic=not train, dtype=dtype, attention=attention, kernel_init=kernel_init, name=name)
  rates = jnp.linspace(0.0, config.drop_path_rate, config.depth)
  return lambda x: layer(x, rates)[0]


def _map_block_stacks(params, fn):
  """`params` with `fn` applied to every `blocks` subtree (the encoder's and a decoder's)."""
  return {key: fn(value) if key == "blocks" else _map_block_stacks(value, fn) if isinstance(value, Mapping) else value
          for key, value in params.items()}


def per_block(params):
  """Parameters in the checkpoints' layout (each `blocks` subtree's leaves stacked along a leading depth
  axis) → one subtree per block (`blocks/0`, `blocks/1`, ...), the layout of `scan_blocks=False` models."""
  def split(stack):
    depth = len(jax.tree.leaves(stack)[0])
    return {str(i): jax.tree.map(lambda leaf: leaf[i], stack) for i in range(depth)}
  return _map_block_stacks(params, split)


def stacked(params):
  """The inverse of `per_block` (on the devices of its arrays: they may span processes)."""
  return _map_block_stacks(params, lambda blocks: jax.tree.map(
      lambda *leaves: jnp.stack(leaves), *(blocks[str(i)] for i in range(len(blocks)))))


class VideoMAE(nn.Module):
  """VideoMAE encoder + head. Clips are (batch, frames, height, width, channels).

  `dtype` is the compute dtype (params keep theirs); `attention` picks the attention implementation
  (see `Attention`; None chooses by backend). Neither changes the parameters. `scan_blocks`: the blocks'
  parameters stacked (the checkpoints' layout) or one subtree per block (`per_block`).
  """

  config: ModelConfig
  dtype: Dtype = jnp.float32
  attention: str | None = None
  scan_blocks: bool = True

  @nn.compact
  def __call__(self, clips, train: bool = False):
    c = self.config
    expected = (c.num_frames, c.image_size, c.image_size, c.in_channels)
    if tuple(clips.shape[1:]) != expected:
      raise ValueError(f"clips have shape {tuple(clips.shape)}; this model expects (batch, *{expected})")
    x = PatchEmbed(c, self.dtype, name="patch_embed")(clips)
    x = x + jnp.asarray(sinusoid_position_table(c.num_tokens, c.width), self.dtype)
    self.sow("intermediates", "embedded", x)
    x = stacked_blocks(c, train=train, dtype=self.dtype, attention=self.attention, name="blocks",
                       scan=self.scan_blocks)(x)

    if c.use_mean_pooling:
      x = LayerNorm(epsilon=c.head_norm_eps, dtype=self.dtype, name="fc_norm")(x.mean(axis=1))
    else:
      x = LayerNorm(epsilon=c.head_norm_eps, dtype=self.dtype, name="norm")(x)[:, 0]
    if not c.num_classes:
      return x
    x = nn.Dropout(c.dropout_rate)(x, deterministic=not train)
    return nn.Dense(c.num_classes, dtype=self.dtype, kernel_init=_dense_init, name="head")(x)


def init_params(config: ModelConfig, rng: jax.Array | int = 0) -> dict:
  """Random parameters for `config` (shape-only tracing: no forward pass is run)."""
  if isinstance(rng, int):
    rng = jax.random.key(rng)
  clips = jnp.zeros((1, config.num_frames, config.image_size, config.image_size, config.in_channels))
  return jax.jit(VideoMAE(config).init)(rng, clips)["params"]
