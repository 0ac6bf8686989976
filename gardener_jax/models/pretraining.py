"""Masked video pretraining, as the VideoMAE release does it (SPEC §8): tube masking, the encoder on the
visible tokens only, a narrow decoder on the visible tokens plus one mask token per masked position,
and the mean squared error against each masked tube's normalised pixels.

The encoder is the classifier's (`patch_embed`, `blocks`, and the final `norm` unless the config mean-
pools), so a pretraining checkpoint's params are a classifier's plus `encoder_to_decoder`, `mask_token`
and `decoder`: scoring and pruning read its `blocks` like any other checkpoint's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gardener_jax.data.sampling import IMAGENET_MEAN, IMAGENET_STD
from gardener_jax.models.config import DecoderConfig, ModelConfig
from gardener_jax.models.videomae import Dtype, LayerNorm, PatchEmbed, sinusoid_position_table, stacked_blocks

# Initialised as the release initialises pretraining from scratch (MCG-NJU/VideoMAE, modeling_pretrain.py):
# Xavier-uniform weights for the linear layers of the encoder's and the decoder's blocks and the decoder's head;
# PyTorch's default (kaiming_uniform_ with a = √5) for the patch embedding and encoder_to_decoder, which it
# leaves alone; the mask token from N(0, 0.02²) cut at ±1 σ. Biases 0 but the patch embedding's.
_xavier = nn.initializers.xavier_uniform()
_torch_default = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
_mask_token_init = nn.initializers.truncated_normal(0.02, lower=-1.0, upper=1.0)


def _torch_default_bias(fan_in: int):
  bound = fan_in**-0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def masked_per_clip(config: ModelConfig, mask_ratio: float) -> int:
  """Tokens a tube mask hides in every clip: ⌊ratio · H'W'⌋ positions of each of the T' frames (the
  release's rounding)."""
  grid = (config.image_size // config.patch_size) ** 2
  return int(mask_ratio * grid) * (config.num_frames // config.tubelet_size)


def tube_masks(rng: jax.Array, batch: int, config: ModelConfig, mask_ratio: float) -> jax.Array:
  """(batch, tokens) booleans, True where masked, in token order (t, h, w). Each clip draws its own
  ⌊ratio · H'W'⌋ spatial positions and masks them at every temporal index, so every clip masks
  `masked_per_clip` tokens and shapes stay static under jit."""
  grid = (config.image_size // config.patch_size) ** 2
  frames = config.num_frames // config.tubelet_size
  per_frame = int(mask_ratio * grid)

  def one_clip(key):
    return jnp.tile(jax.random.permutation(key, grid) < per_frame, frames)

  return jax.vmap(one_clip)(jax.random.split(rng, batch))


def tubes(clips: jax.Array, config: ModelConfig) -> jax.Array:
  """(B, T, H, W, C) → (B, tokens, tubelet · patch², C): each token's pixels, tokens in (t, h, w) order."""
  b, t, h, w, c = clips.shape
  k, p = config.tubelet_size, config.patch_size
  x = clips.reshape(b, t // k, k, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, -1, k * p * p, c)


def untubes(tokens: jax.Array, config: ModelConfig) -> jax.Array:
  """The inverse of `tubes`."""
  b = tokens.shape[0]
  k, p, c = config.tubelet_size, config.patch_size, config.in_channels
  t, g = config.num_frames // k, config.image_size // p
  x = tokens.reshape(b, t, g, g, k, p, p, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, config.num_frames, config.image_size, config.image_size, c)


def pixel_tubes(clips: jax.Array, config: ModelConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Each token's pixels in [0, 1] (the ImageNet normalisation undone), and their mean and
  sqrt(unbiased variance) + 1e-6 per channel: (B, tokens, tubelet · patch², C), (B, tokens, 1, C) × 2."""
  pixels = tubes(jnp.asarray(clips, jnp.float32) * IMAGENET_STD + IMAGENET_MEAN, config)
  mean = pixels.mean(axis=-2, keepdims=True)
  scale = jnp.sqrt(jnp.var(pixels, axis=-2, keepdims=True, ddof=1)) + 1e-6
  return pixels, mean, scale


def pixel_targets(clips: jax.Array, config: ModelConfig) -> jax.Array:
  """(B, tokens, tubelet · patch² · C) regression targets, pixel-major and channel-minor: each tube's
  pixels normalised per channel (`decoder.norm_pix_loss`), else its raw pixels in [0, 1]."""
  pixels, mean, scale = pixel_tubes(clips, config)
  if config.decoder.norm_pix_loss:
    pixels = (pixels - mean) / scale
  return pixels.reshape(*pixels.shape[:2], -1)


def _masked_count(mask) -> int:
  """The number of masked tokens per clip of a concrete mask (the same for every clip)."""
  try:
    counts = np.asarray(mask).sum(axis=1)
  except jax.errors.TracerArrayConversionError:
    raise ValueError("inside jit the number of masked tokens must be static: pass num_masked") from None
  if len(set(counts.tolist())) != 1:
    raise ValueError(f"every clip must mask the same number of tokens; the mask's rows mask {sorted(set(counts))}")
  return int(counts[0])


def decoder_blocks_config(decoder: DecoderConfig, remat: bool = False) -> ModelConfig:
  """A ModelConfig for the decoder's blocks (what `Block` reads: width, heads, MLP, eps, remat)."""
  return ModelConfig(width=decoder.width, depth=decoder.depth, num_heads=decoder.num_heads, mlp_dim=decoder.mlp_dim,
                     norm_eps=decoder.norm_eps, remat=remat)


class Decoder(nn.Module):
  """Decoder blocks, then the final norm and the pixel head on the last `num_outputs` tokens."""

  config: ModelConfig  # the encoder's, with its `decoder`
  dtype: Dtype = jnp.float32
  attention: str | None = None
  scan_blocks: bool = True

  @nn.compact
  def __call__(self, x, num_outputs: int, train: bool = False):
    c, d = self.config, self.config.decoder
    x = stacked_blocks(decoder_blocks_config(d, c.remat), train=train, dtype=self.dtype, attention=self.attention,
                       name="blocks", scan=self.scan_blocks, kernel_init=_xavier)(x)
    x = LayerNorm(epsilon=d.head_norm_eps, dtype=self.dtype, name="norm")(x[:, x.shape[1] - num_outputs:])
    pixels = c.in_channels * c.tubelet_size * c.patch_size**2
    return nn.Dense(pixels, dtype=self.dtype, kernel_init=_xavier, name="head")(x)


class VideoMAEPretraining(nn.Module):
  """`apply({'params': p}, clips, mask)` → {'loss', 'pred', 'target'}.

  clips: (B, T, H, W, C) ImageNet-normalised; mask: (B, tokens) booleans in token order, True where
  masked, the same count in every clip (`num_masked` says it when the mask is traced, under jit).
  `pred` and `target` are (B, masked tokens, C · tubelet · patch²), the masked tokens in token order
  (as HuggingFace's `logits`); `loss` is their mean squared error, in float32. `scan_blocks` as `VideoMAE`'s,
  for the encoder's and the decoder's blocks.
  """

  config: ModelConfig
  dtype: Dtype = jnp.float32
  attention: str | None = None
  scan_blocks: bool = True

  @nn.compact
  def __call__(self, clips, mask, train: bool = False, num_masked: int | None = None) -> dict:
    c, d = self.config, self.config.decoder
    if d is None:
      raise ValueError("VideoMAEPretraining needs a config with a decoder (ModelConfig.decoder)")
    masked = _masked_count(mask) if num_masked is None else num_masked
    order = jnp.argsort(mask, axis=1, stable=True)  # the visible tokens first, each group in token order
    visible, hidden = order[:, :c.num_tokens - masked], order[:, c.num_tokens - masked:]

    fan_in = c.in_channels * c.tubelet_size * c.patch_size**2
    x = PatchEmbed(c, self.dtype, _torch_default, _torch_default_bias(fan_in), name="patch_embed")(clips)
    x = x + jnp.asarray(sinusoid_position_table(c.num_tokens, c.width), self.dtype)
    x = jnp.take_along_axis(x, visible[..., None], axis=1)
    x = stacked_blocks(c, train=train, dtype=self.dtype, attention=self.attention, name="blocks",
                       scan=self.scan_blocks, kernel_init=_xavier)(x)
    if not c.use_mean_pooling:
      x = LayerNorm(epsilon=c.head_norm_eps, dtype=self.dtype, name="norm")(x)

    x = nn.Dense(d.width, use_bias=False, dtype=self.dtype, kernel_init=_torch_default, name="encoder_to_decoder")(x)
    mask_token = self.param("mask_token", _mask_token_init, (1, 1, d.width)).astype(self.dtype)
    position = jnp.asarray(sinusoid_position_table(c.num_tokens, d.width), self.dtype)
    x = jnp.concatenate([x + position[visible], mask_token + position[hidden]], axis=1)
    decoder = Decoder(c, self.dtype, self.attention, self.scan_blocks, name="decoder")
    pred = decoder(x, masked, train).astype(jnp.float32)

    target = jnp.take_along_axis(pixel_targets(clips, c), hidden[..., None], axis=1)
    return {"loss": jnp.mean((pred - target) ** 2), "pred": pred, "target": target}


def reconstruct(clips: jax.Array, mask: jax.Array, pred: jax.Array, config: ModelConfig) -> jax.Array:
  """Clips in [0, 1] whose masked tubes hold the prediction (un-normalised with each tube's own mean
  and scale, as the release's visualisation does) and whose visible tubes hold the input."""
  pixels, mean, scale = pixel_tubes(clips, config)
  b, n, length, channels = pixels.shape
  masked = int(pred.shape[1])
  hidden = jnp.argsort(mask, axis=1, stable=True)[:, n - masked:]
  guess = pred.reshape(b, masked, length, channels)
  if config.decoder.norm_pix_loss:
    guess = guess * jnp.take_along_axis(scale, hidden[..., None, None], 1) + jnp.take_along_axis(
        mean, hidden[..., None, None], 1)
  filled = pixels.at[jnp.arange(b)[:, None], hidden].set(guess)
  return jnp.clip(untubes(filled, config), 0.0, 1.0)


def init_pretraining_params(config: ModelConfig, rng: jax.Array | int = 0, mask_ratio: float = 0.9) -> dict:
  """Random parameters for a pretraining model (shape-only tracing)."""
  if isinstance(rng, int):
    rng = jax.random.key(rng)
  clips = jnp.zeros((1, config.num_frames, config.image_size, config.image_size, config.in_channels))
  masked = masked_per_clip(config, mask_ratio)
  mask = jnp.zeros((1, config.num_tokens), bool).at[0, :masked].set(True)
  init = jax.jit(lambda key, x, m: VideoMAEPretraining(config).init(key, x, m, num_masked=masked))
  return init(rng, clips, mask)["params"]
