"""What each block does to the tokens passing through it, measured on a few calibration clips (SPEC §10).

h_0 is the token sequence entering the first block (patch embedding plus position table) and h_ℓ the
output of block ℓ. One jit-compiled forward per batch keeps h_0 … h_L and reduces every token to the
cosines between its states at every pair of depths; the host averages over all tokens of all clips:

    cosine[i, j] = mean cos(h_i, h_j),    angle[i, j] = mean arccos(cos(h_i, h_j)) / π.

Block Influence (ShortGPT) of block ℓ is 1 − cosine[ℓ − 1, ℓ]; the angular distance (Gromov et al.) of
the span of blocks ℓ + 1 … ℓ + n is angle[ℓ, ℓ + n].

Calibration clips are sampled as for evaluation (the middle clip, a centre crop after resizing the
short side; frames and size from the model's config) from videos drawn with a seed.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gardener_jax.models import ModelConfig, VideoMAE
from gardener_jax.models.surgery import classifier_from_pretraining


@dataclasses.dataclass(frozen=True)
class Calibration:
  clips: np.ndarray  # (N, T, S, S, 3) float32, ImageNet-normalised
  source: str  # where the clips come from, for the reports

  def to_dict(self) -> dict:
    return {"clips": len(self.clips), "source": self.source}


def draw_clips(source, model_config: ModelConfig, num_clips: int, seed: int, *, sampling_rate: int = 4,
               scaled_decode: bool = False, name: str = "") -> Calibration:
  """`num_clips` clips of different videos of `source` (a random-access split), drawn with `seed`; a
  video that cannot be decoded is passed over for the next one. `scaled_decode` as the job's data reads."""
  from gardener_jax.data import input_pipeline, sampling

  if num_clips < 1:
    raise ValueError(f"calibration_clips {num_clips}: expected at least 1")
  spec = input_pipeline.ClipSpec(model_config.num_frames, sampling_rate, model_config.image_size, augment=False,
                                 scaled_decode=scaled_decode)
  clips = []
  for index in np.random.default_rng(seed).permutation(len(source)):
    views = input_pipeline.eval_views(source[int(index)], int(index), spec)
    if views["valid"]:
      clips.append(sampling.normalize(views["clips"][0]))
    if len(clips) == num_clips:
      break
  if len(clips) < num_clips:
    raise ValueError(f"calibration_clips {num_clips}: {name or 'the split'} has only {len(clips)} decodable videos "
                     "(one clip is drawn per video)")
  return Calibration(np.stack(clips), f"{num_clips} clips of {name or 'the split'} (seed {seed})")


def from_dataset(name: str, data_dir, model_config: ModelConfig, *, data_config: str | None = None,
                 split: str = "train", num_clips: int = 8, seed: int = 0, sampling_rate: int = 4) -> Calibration:
  """Calibration clips from a prepared dataset (`gardener data build`)."""
  from gardener_jax.data import sources

  source, _ = sources.open_split(data_dir, name, split, data_config)
  label = f"{name}{f'/{data_config}' if data_config else ''} split {split!r}"
  return draw_clips(source, model_config, num_clips, seed, sampling_rate=sampling_rate, name=label)


@dataclasses.dataclass(frozen=True)
class HiddenStateSimilarity:
  """Token-averaged similarity of the hidden states h_0 … h_L, (L + 1, L + 1) each."""

  cosine: np.ndarray
  angle: np.ndarray  # in units of π: 0 same direction, 1 opposite
  tokens: int  # how many token positions were averaged (clips × tokens per clip)

  def block_influence(self) -> np.ndarray:
    """1 − cos(input, output) of each block."""
    return 1.0 - np.diagonal(self.cosine, offset=1)

  def span_distances(self, n: int) -> np.ndarray:
    """angle[ℓ, ℓ + n] for ℓ = 0 … L − n: the angular distance across the blocks ℓ + 1 … ℓ + n."""
    return np.diagonal(self.angle, offset=n).copy()


@functools.partial(jax.jit, static_argnums=0)
def _similarity_sums(config: ModelConfig, params, clips):
  """Per clip, the sums over its tokens of cos and of arccos / π for every pair of depths: (B, L + 1, L + 1)."""
  _, state = VideoMAE(config).apply({"params": params}, clips, mutable=["intermediates"])
  states = jnp.concatenate([state["intermediates"]["embedded"][0][None],
                            state["intermediates"]["blocks"]["hidden_state"][0]])  # (L + 1, B, N, D)
  states = states.astype(jnp.float32)
  unit = states * jax.lax.rsqrt(jnp.sum(states * states, axis=-1, keepdims=True))
  cosine = jnp.clip(jnp.einsum("ibnd,jbnd->bnij", unit, unit, precision=jax.lax.Precision.HIGHEST), -1.0, 1.0)
  return cosine.sum(axis=1), (jnp.arccos(cosine) / jnp.pi).sum(axis=1)


def hidden_state_similarity(params, config: ModelConfig, clips: np.ndarray, batch_size: int = 8
                            ) -> HiddenStateSimilarity:
  """The similarity of every pair of depths, over every token of `clips`, `batch_size` clips per forward."""
  if config.is_pretraining:  # the decoder plays no part; the encoder runs as a classifier's would
    params, config = classifier_from_pretraining(params, config, 0, 0)
  config = config.replace(dropout_rate=0.0, attention_dropout_rate=0.0, drop_path_rate=0.0, remat=False)
  cosine = angle = 0.0
  for start in range(0, len(clips), batch_size):
    sums = _similarity_sums(config, params, jnp.asarray(clips[start:start + batch_size]))
    cosine = cosine + np.asarray(sums[0], np.float64).sum(axis=0)  # clips added in float64
    angle = angle + np.asarray(sums[1], np.float64).sum(axis=0)
  tokens = len(clips) * config.num_tokens
  cosine, angle = cosine / tokens, angle / tokens
  # A state against itself: exactly 1 and 0 (float32 rounding leaves cos a hair below 1, and arccos
  # magnifies that to ~1e-4 near 1).
  np.fill_diagonal(cosine, 1.0)
  np.fill_diagonal(angle, 0.0)
  return HiddenStateSimilarity(cosine, angle, tokens)
