"""Model configuration of a (possibly pruned) VideoMAE encoder, its classifier head, and the masked
autoencoder's decoder of a pretraining checkpoint."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

# Named sizes of SPEC §1: width, depth, heads, MLP width.
VARIANTS = {
    "vit_s": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_b": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_l": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    "vit_h": dict(width=1280, depth=32, num_heads=16, mlp_dim=5120),
}

# The original release's pretraining decoders (width, heads) by encoder size; 4 blocks unless told.
DECODER_VARIANTS = {
    "vit_s": dict(width=192, num_heads=3, mlp_dim=768),
    "vit_b": dict(width=384, num_heads=6, mlp_dim=1536),
    "vit_l": dict(width=512, num_heads=8, mlp_dim=2048),
    "vit_h": dict(width=640, num_heads=8, mlp_dim=2560),
}


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """The decoder that masked pretraining trains beside the encoder (SPEC §8): blocks like the
  encoder's, a final LayerNorm and a linear head to the pixels of one tube."""

  width: int = 384
  depth: int = 4
  num_heads: int = 6
  mlp_dim: int = 1536
  norm_eps: float = 1e-6  # LayerNorms inside the blocks (HuggingFace: the encoder's layer_norm_eps).
  head_norm_eps: float = 1e-6  # the final norm (HuggingFace: 1e-5).
  norm_pix_loss: bool = True  # targets: each tube's pixels normalised per channel (else raw pixels in [0, 1])

  def __post_init__(self):
    if self.width % self.num_heads:
      raise ValueError(f"invalid DecoderConfig: width {self.width} is not a multiple of num_heads {self.num_heads}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything the Flax VideoMAE needs to be built; serialised as JSON next to the params.

  `kept_blocks` lists, 1-based and in order, which blocks of the original (unpruned) model this one
  holds, and `original_depth` how many that model had: a pruned model records its lineage rather
  than leaving it to be inferred (blocks removed at the end leave no trace in `kept_blocks`).
  """

  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  num_classes: int = 0  # 0: no head, the model returns the pooled features.
  class_names: tuple[str, ...] | None = None  # what each output means, when the task that trained the head is known
  num_frames: int = 16
  image_size: int = 224
  patch_size: int = 16
  tubelet_size: int = 2
  in_channels: int = 3
  norm_eps: float = 1e-6  # LayerNorms inside the blocks (and `norm` in the original release).
  head_norm_eps: float = 1e-6  # fc_norm / final norm: 1e-6 original release, 1e-5 / 1e-12 HuggingFace.
  layer_scale: bool = False
  use_mean_pooling: bool = True  # True: mean → fc_norm → head; False: norm → first token → head.
  kept_blocks: tuple[int, ...] | None = None
  original_depth: int | None = None  # depth of the unpruned model; None: this model is unpruned
  dropout_rate: float = 0.0  # before the head.
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  remat: bool = False
  decoder: DecoderConfig | None = None  # a pretraining checkpoint's decoder; None for classifiers

  @property
  def is_pretraining(self) -> bool:
    return self.decoder is not None

  def __post_init__(self):
    unpruned = tuple(range(1, self.depth + 1))
    if self.kept_blocks is None:
      object.__setattr__(self, "kept_blocks", unpruned)
    object.__setattr__(self, "kept_blocks", tuple(int(b) for b in self.kept_blocks))
    if self.class_names is not None:
      object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
    problems = []
    if self.class_names is not None and len(self.class_names) != self.num_classes:
      problems.append(f"class_names has {len(self.class_names)} entries, num_classes is {self.num_classes}")
    if self.original_depth is None:
      if self.kept_blocks == unpruned:
        object.__setattr__(self, "original_depth", self.depth)
      else:
        problems.append(f"kept_blocks {list(self.kept_blocks)} without original_depth (the unpruned model's depth)")
    elif self.kept_blocks and max(self.kept_blocks) > self.original_depth:
      problems.append(f"kept_blocks {list(self.kept_blocks)} go beyond original_depth {self.original_depth}")
    if len(self.kept_blocks) != self.depth:
      problems.append(f"kept_blocks has {len(self.kept_blocks)} entries, depth is {self.depth}")
    if list(self.kept_blocks) != sorted(set(self.kept_blocks)) or min(self.kept_blocks, default=1) < 1:
      problems.append(f"kept_blocks must be distinct, increasing and 1-based, got {self.kept_blocks}")
    if self.width % self.num_heads:
      problems.append(f"width {self.width} is not a multiple of num_heads {self.num_heads}")
    if self.num_frames % self.tubelet_size:
      problems.append(f"num_frames {self.num_frames} is not a multiple of tubelet_size {self.tubelet_size}")
    if self.image_size % self.patch_size:
      problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
    if self.depth < 1:
      problems.append(f"depth must be at least 1, got {self.depth}")
    if problems:
      raise ValueError("invalid ModelConfig: " + "; ".join(problems))

  @classmethod
  def from_variant(cls, name: str, **overrides) -> ModelConfig:
    if name not in VARIANTS:
      raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return cls(**{**VARIANTS[name], **overrides})

  @classmethod
  def from_job(cls, model, data, **fields) -> ModelConfig:
    """The architecture of a job config: sizes from its `model` section, the clip shape from `data`."""
    return cls(width=model.width, depth=model.depth, num_heads=model.num_heads, mlp_dim=model.mlp_dim,
               num_frames=data.num_frames, image_size=data.image_size, patch_size=model.patch_size,
               tubelet_size=model.tubelet_size, **fields)

  @property
  def num_tokens(self) -> int:
    return (self.num_frames // self.tubelet_size) * (self.image_size // self.patch_size) ** 2

  @property
  def removed_blocks(self) -> tuple[int, ...]:
    """The original model's blocks (1-based) that this one no longer holds."""
    return tuple(b for b in range(1, self.original_depth + 1) if b not in self.kept_blocks)

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  def replace(self, **changes) -> ModelConfig:
    """A changed copy; a new depth without new kept_blocks means a fresh (unpruned) model of that depth."""
    if "depth" in changes and "kept_blocks" not in changes:
      changes.update(kept_blocks=None, original_depth=None)
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["kept_blocks"] = list(self.kept_blocks)
    if self.class_names is not None:
      d["class_names"] = list(self.class_names)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
    if isinstance(d.get("decoder"), dict):
      d = {**d, "decoder": DecoderConfig(**d["decoder"])}
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)
