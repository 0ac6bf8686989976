"""Infers the ModelConfig of a checkpoint from its weight shapes, its metadata and the user's flags.

Every field comes from at least one source; sources that disagree are an error, a field no source
gives is an error that says how to supply it. The result records where each field came from.
"""

from __future__ import annotations

import re
from typing import Any

from gardener_jax.models import DECODER_VARIANTS, VARIANTS, DecoderConfig, ModelConfig
from tools.convert_torch.errors import ConversionError
from tools.convert_torch.layouts import ORIGINAL
from tools.convert_torch.read import LazyTensors

# Original-release model names, e.g. 'vit_base_patch16_224', 'pretrain_videomae_base_patch16_224'.
_MODEL_NAME = re.compile(r"(small|base|large|huge)_patch(\d+)_(\d+)")
_SIZE_TO_VARIANT = {"small": "vit_s", "base": "vit_b", "large": "vit_l", "huge": "vit_h"}
_HOW_TO_SUPPLY = "pass --variant (vit_s, vit_b, vit_l, vit_h) or --{flag}"


def _from_shapes(tensors: LazyTensors, layout: str, source: str) -> dict[str, Any]:
  if layout == ORIGINAL:
    patch, block, head = "patch_embed.proj.weight", r"^blocks\.(\d+)\.", "head.weight"
    fc1 = "blocks.0.mlp.fc1.weight"
    pooling = {"fc_norm.weight": True, "norm.weight": False}
  else:
    patch, block, head = ("videomae.embeddings.patch_embeddings.projection.weight",
                          r"^videomae\.encoder\.layer\.(\d+)\.", "classifier.weight")
    fc1 = "videomae.encoder.layer.0.intermediate.dense.weight"
    pooling = {"fc_norm.weight": True, "videomae.layernorm.weight": False}
  width, in_channels, tubelet, patch_h, patch_w = tensors.shape(patch)
  if patch_h != patch_w:
    raise ConversionError(f"{source}: key '{patch}' has a non-square patch {patch_h}×{patch_w}")
  blocks = {int(m[1]) for k in tensors if (m := re.match(block, k))}
  if fc1 not in tensors:
    raise ConversionError(f"{source}: missing key '{fc1}' (expected the first block's MLP)")
  found = [flag for key, flag in pooling.items() if key in tensors]
  if not found and "encoder_to_decoder.weight" in tensors:
    found = [True]  # a HuggingFace pretraining encoder that mean-pools: no final norm, no fc_norm
  if len(found) != 1:
    backbone = "" if found or layout == ORIGINAL or head in tensors else (
        " (a HuggingFace VideoMAEModel that mean-pools keeps no norm: its fc_norm belongs to "
        "VideoMAEForVideoClassification; convert that model, or the pretraining checkpoint)")
    raise ConversionError(f"{source}: expected exactly one of the keys {list(pooling)} (mean pooling + fc_norm, "
                          f"or a final norm); found {'both' if found else 'neither'}{backbone}")
  return dict(
      width=width, in_channels=in_channels, tubelet_size=tubelet, patch_size=patch_h,
      depth=max(blocks) + 1, mlp_dim=tensors.shape(fc1)[0], use_mean_pooling=found[0],
      num_classes=tensors.shape(head)[0] if head in tensors else 0,
      layer_scale=layout == ORIGINAL and "blocks.0.gamma_1" in tensors,
  )


def from_hf_config(hf: dict[str, Any], source: str) -> dict[str, Any]:
  """ModelConfig fields that a HuggingFace config.json gives."""
  if hf.get("model_type", "videomae") != "videomae":
    raise ConversionError(f"{source}/config.json: model_type is {hf['model_type']!r}, expected 'videomae'")
  if hf.get("hidden_act", "gelu") != "gelu":
    raise ConversionError(f"{source}/config.json: hidden_act is {hf['hidden_act']!r}; only exact 'gelu' is supported")
  if not hf.get("qv_bias", hf.get("qkv_bias", True)):
    raise ConversionError(f"{source}/config.json: qv_bias is false; only VideoMAE with query and value biases (the "
                          "release's and transformers' default) is supported")
  names = dict(width="hidden_size", depth="num_hidden_layers", num_heads="num_attention_heads",
               mlp_dim="intermediate_size", num_frames="num_frames", image_size="image_size",
               patch_size="patch_size", tubelet_size="tubelet_size", in_channels="num_channels",
               use_mean_pooling="use_mean_pooling", norm_eps="layer_norm_eps")
  facts = {field: hf[key] for field, key in names.items() if key in hf}
  facts.update(_lineage({k.removeprefix("gardener_"): v for k, v in hf.items() if k.startswith("gardener_")}))
  labels = {int(i): str(name) for i, name in (hf.get("id2label") or {}).items()}
  names = tuple(labels.get(i) for i in range(len(labels)))
  if names and names != tuple(f"LABEL_{i}" for i in range(len(names))):  # transformers' placeholders name nothing
    facts["class_names"] = names
  for field in ("image_size", "patch_size"):
    if isinstance(facts.get(field), (list, tuple)):
      if len(set(facts[field])) != 1:
        raise ConversionError(f"{source}/config.json: non-square {field} {facts[field]} is not supported")
      facts[field] = facts[field][0]
  return facts


def _lineage(facts: dict[str, Any]) -> dict[str, Any]:
  """kept_blocks and original_depth, as gardener_jax writes them into exported configs."""
  lineage = {}
  if "kept_blocks" in facts:
    lineage["kept_blocks"] = tuple(int(b) for b in facts["kept_blocks"])
  if facts.get("original_depth") is not None:
    lineage["original_depth"] = int(facts["original_depth"])
  return lineage


_STORED_FIELDS = ("num_heads", "num_frames", "image_size", "patch_size", "tubelet_size", "norm_eps", "head_norm_eps",
                  "layer_scale", "use_mean_pooling", "class_names")


def _from_gardener_config(stored: dict[str, Any]) -> dict[str, Any]:
  """The architecture and lineage a gardener_jax `--to-original` export stores beside its weights."""
  return {**{k: stored[k] for k in _STORED_FIELDS if k in stored}, **_lineage(stored)}


def _from_train_args(args: dict[str, Any]) -> dict[str, Any]:
  facts = {}
  if m := _MODEL_NAME.search(str(args.get("model", ""))):
    facts.update({k: v for k, v in VARIANTS[_SIZE_TO_VARIANT[m[1]]].items() if k != "depth"})
    facts.update(patch_size=int(m[2]), image_size=int(m[3]))
  names = dict(num_frames="num_frames", image_size="input_size", tubelet_size="tubelet_size")
  facts.update({field: args[key] for field, key in names.items() if isinstance(args.get(key), int)})
  return facts


def _resolve(sources: list[tuple[str, dict[str, Any]]], source: str, prefix: str = ""):
  """Merges the facts of every source; two sources that disagree on a field are an error."""
  resolved, provenance = {}, {}
  for name, facts in sources:
    for field, value in facts.items():
      if field in resolved and resolved[field] != value:
        raise ConversionError(f"{source}: {prefix}{field} is {resolved[field]} according to {provenance[field]} but "
                              f"{value} according to {name}")
      resolved.setdefault(field, value)
      provenance.setdefault(field, name)
  return resolved, provenance


def _fill(resolved: dict, provenance: dict, defaults: list[tuple[str, dict[str, Any]]]) -> None:
  for name, facts in defaults:
    for field, value in facts.items():
      if field not in resolved:
        resolved[field], provenance[field] = value, name


def infer_config(tensors, layout, *, source: str, hf_config=None, train_args=None, gardener_config=None,
                 variant=None, overrides=None) -> tuple[ModelConfig, dict[str, str]]:
  """Returns the config and, per field, the source it came from."""
  overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
  sources: list[tuple[str, dict[str, Any]]] = [("weight shapes", _from_shapes(tensors, layout, source))]
  if hf_config is not None:
    sources.append(("config.json", from_hf_config(hf_config, source)))
  if train_args:
    sources.append(("pickled args", _from_train_args(train_args)))
  if gardener_config:
    sources.append(("gardener_config", _from_gardener_config(gardener_config)))
  if variant:
    if variant not in VARIANTS:
      raise ConversionError(f"--variant {variant!r} is unknown; known: {', '.join(VARIANTS)}")
    sources.append((f"--variant {variant}", {k: v for k, v in VARIANTS[variant].items() if k != "depth"}))
  sources.append(("flags", {k: v for k, v in overrides.items() if not k.startswith("decoder_")}))
  resolved, provenance = _resolve(sources, source)
  if len(resolved.get("class_names") or ()) != resolved["num_classes"]:  # labels that do not describe this head
    resolved.pop("class_names", None), provenance.pop("class_names", None)

  # Fields the layout fixes, then the input size a named variant implies (SPEC §1: 16 × 224²).
  if layout == ORIGINAL:
    fixed = dict(norm_eps=1e-6, head_norm_eps=1e-6)
  else:
    norm_eps = resolved.get("norm_eps", 1e-12)  # transformers' default layer_norm_eps
    fixed = dict(norm_eps=norm_eps, head_norm_eps=1e-5 if resolved["use_mean_pooling"] else norm_eps)
  defaults = [(f"{layout} layout", fixed)]
  if variant:
    defaults.append((f"--variant {variant} (16 × 224² clips)", dict(num_frames=16, image_size=224)))
  _fill(resolved, provenance, defaults)

  missing = [f for f in ("num_heads", "num_frames", "image_size") if f not in resolved]
  if missing:
    raise ConversionError(
        f"{source}: the weights do not determine {', '.join(missing)}; "
        + "; ".join(_HOW_TO_SUPPLY.format(flag=f) for f in missing)
    )
  if "encoder_to_decoder.weight" in tensors:
    decoder, decoder_provenance = _infer_decoder(tensors, layout, source, hf_config, train_args, gardener_config,
                                                 variant, overrides, resolved["norm_eps"])
    resolved["decoder"] = decoder
    provenance.update({f"decoder.{k}": v for k, v in decoder_provenance.items()})
  try:
    config = ModelConfig(**resolved)
  except (TypeError, ValueError) as e:
    raise ConversionError(f"{source}: {e}") from None
  return config, provenance


def _infer_decoder(tensors, layout, source, hf_config, train_args, gardener_config, variant, overrides,
                   encoder_norm_eps) -> tuple[DecoderConfig, dict[str, str]]:
  """The pretraining decoder's config from the same kinds of sources as the encoder's."""
  blocks, fc1 = ((r"^decoder\.blocks\.(\d+)\.", "decoder.blocks.0.mlp.fc1.weight") if layout == ORIGINAL else
                 (r"^decoder\.decoder_layers\.(\d+)\.", "decoder.decoder_layers.0.intermediate.dense.weight"))
  depth = {int(m[1]) for k in tensors if (m := re.match(blocks, k))}
  if fc1 not in tensors:
    raise ConversionError(f"{source}: missing key '{fc1}' (expected the first decoder block's MLP)")
  sources = [("weight shapes", dict(width=tensors.shape("encoder_to_decoder.weight")[0], depth=max(depth) + 1,
                                    mlp_dim=tensors.shape(fc1)[0]))]
  if hf_config is not None:
    names = dict(width="decoder_hidden_size", depth="decoder_num_hidden_layers",
                 num_heads="decoder_num_attention_heads", mlp_dim="decoder_intermediate_size",
                 norm_pix_loss="norm_pix_loss")
    sources.append(("config.json", {field: hf_config[key] for field, key in names.items() if key in hf_config}))
  if train_args:
    facts = {}
    if m := _MODEL_NAME.search(str(train_args.get("model", ""))):
      facts.update(DECODER_VARIANTS[_SIZE_TO_VARIANT[m[1]]])
    if isinstance(train_args.get("decoder_depth"), int):
      facts["depth"] = train_args["decoder_depth"]
    if isinstance(train_args.get("normlize_target"), bool):  # the release's spelling
      facts["norm_pix_loss"] = train_args["normlize_target"]
    sources.append(("pickled args", facts))
  if gardener_config and isinstance(gardener_config.get("decoder"), dict):
    sources.append(("gardener_config", gardener_config["decoder"]))
  if variant:
    sources.append((f"--variant {variant}", DECODER_VARIANTS[variant]))
  if "decoder_num_heads" in overrides:
    sources.append(("flags", {"num_heads": overrides["decoder_num_heads"]}))
  resolved, provenance = _resolve(sources, source, "decoder.")
  fixed = (dict(norm_eps=1e-6, head_norm_eps=1e-6) if layout == ORIGINAL else
           dict(norm_eps=encoder_norm_eps, head_norm_eps=1e-5))  # HF: the encoder's eps; its final norm's default
  _fill(resolved, provenance, [(f"{layout} layout", fixed)])
  if "num_heads" not in resolved:
    raise ConversionError(f"{source}: the weights do not determine the decoder's num_heads; pass --variant "
                          "(vit_s, vit_b, vit_l, vit_h) or --decoder_num_heads")
  try:
    return DecoderConfig(**resolved), provenance
  except (TypeError, ValueError) as e:
    raise ConversionError(f"{source}: {e}") from None
