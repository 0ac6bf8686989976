"""PyTorch VideoMAE → gardener_jax checkpoint, and back (HuggingFace directory or original `.pth`)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gardener_jax.checkpoint import count_params, load_tree, read_config, write_checkpoint
from gardener_jax.files import atomic_directory, atomic_path
from gardener_jax.models import ModelConfig, sinusoid_position_table
from tools.convert_torch.errors import ConversionError
from tools.convert_torch.infer import infer_config
from tools.convert_torch.layouts import HF, ORIGINAL, canonical_key, detect_layout, flax_to_torch, torch_to_flax
from tools.convert_torch.read import read_source

REPORT_JSON, REPORT_MD = "conversion_report.json", "conversion_report.md"


def convert(src, out, *, variant: str | None = None, overrides: dict[str, Any] | None = None,
            overwrite: bool = False) -> dict[str, Any]:
  """Converts a PyTorch VideoMAE checkpoint into a gardener_jax checkpoint directory; returns the report."""
  source = read_source(src)
  name = str(source.path)
  layout = detect_layout(source.tensors, name)
  canonical = {key: canonical_key(layout, key) for key in source.tensors}
  if len(set(canonical.values())) < len(canonical):
    raise ConversionError(f"{name}: several keys name the same weight (e.g. both q_bias and query.bias)")
  tensors = source.tensors.rename(canonical)
  ignored = dict(source.ignored)
  for key in [k for k in tensors if k.endswith("attention.attention.key.bias")]:
    if np.any(tensors.pop(key)):
      raise ConversionError(f"{name}: key '{key}' is non-zero; VideoMAE's key bias must be zero")
    ignored[key] = "all zeros: the model's key bias is fixed at zero"

  config, provenance = infer_config(tensors, layout, source=name, hf_config=source.hf_config,
                                    train_args=source.train_args, gardener_config=source.gardener_config,
                                    variant=variant, overrides=overrides)
  params, mapped = torch_to_flax(tensors, layout, config, source=name)
  if "pos_embed" in tensors:  # some files store the fixed table; anything else would be a learned one.
    pos_embed = tensors.pop("pos_embed")
    if pos_embed.size != config.num_tokens * config.width:
      raise ConversionError(f"{name}: key 'pos_embed' has shape {tuple(pos_embed.shape)}; the model's "
                            f"{config.num_frames} frames of {config.image_size}² make {config.num_tokens} tokens of "
                            f"width {config.width} (check --num_frames and --image_size)")
    # A table stored in float16 or bfloat16 is the sinusoid rounded to that grid.
    if not np.allclose(pos_embed.astype(np.float32).reshape(-1),
                       sinusoid_position_table(config.num_tokens, config.width).reshape(-1),
                       atol=max(1e-6, float(jnp.finfo(pos_embed.dtype).eps))):
      raise ConversionError(f"{name}: key 'pos_embed' is not the fixed sinusoid table; learned position "
                            "embeddings are not supported")
    ignored["pos_embed"] = "equals the fixed sinusoid table, which the model rebuilds"
  if tensors:
    raise ConversionError(f"{name}: unexpected keys that are not VideoMAE {layout} weights: {sorted(tensors)[:10]}")

  report = {
      "source": name,
      "layout": layout,
      "kind": "pretraining" if config.is_pretraining else "finetuned",
      "config": config.to_dict(),
      "config_sources": provenance,
      "num_params": count_params(params),
      "dtypes": sorted({str(a.dtype) for a in jax.tree.leaves(params)}),
      "mapped": [{"flax": flax, "torch": keys} for flax, keys in mapped],
      "ignored": ignored,
  }
  with atomic_directory(out, overwrite) as tmp:
    write_checkpoint(tmp, params, config)
    (tmp / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (tmp / REPORT_MD).write_text(_report_markdown(report))
  return report


def export(checkpoint, out, layout: str, *, fold_layer_scale: bool = False, overwrite: bool = False) -> list[str]:
  """Writes a gardener_jax checkpoint as a HuggingFace directory or an original-release `.pth`.

  Returns warnings about what the target format cannot represent exactly.
  """
  config = read_config(checkpoint)
  params, warnings = load_tree(checkpoint)["params"], []
  if layout == HF:
    params, config, warnings = _without_layer_scale(params, config, checkpoint, fold_layer_scale)
  tensors = flax_to_torch(params, layout, config)
  if config.is_pretraining and layout == ORIGINAL:  # the release's pretraining files prefix the encoder
    tensors = {k if k.startswith(("decoder.", "encoder_to_decoder.", "mask_token")) else f"encoder.{k}": v
               for k, v in tensors.items()}

  if layout == HF:
    hf_config, hf_warnings = to_hf_config(config)
    warnings += hf_warnings
    with atomic_directory(out, overwrite) as tmp:
      from safetensors.numpy import save_file
      save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
      (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
      (tmp / "preprocessor_config.json").write_text(json.dumps(hf_preprocessor_config(config), indent=2) + "\n")
  else:
    _save_torch(tensors, pathlib.Path(out), config, overwrite)
  return warnings


def _without_layer_scale(params, config: ModelConfig, name, fold_layer_scale: bool):
  """(params, config, warnings) that a HuggingFace VideoMAE, which has no layer scale, can hold."""
  if not config.layer_scale:
    return params, config, []
  if not fold_layer_scale:
    raise ConversionError(f"{name}: has layer scale (gamma_1, gamma_2), which the HuggingFace VideoMAE "
                          "lacks; pass --fold_layer_scale to multiply it into attn.proj and mlp.fc2")
  params, config = fold_layer_scale_into_linears(params, config)
  return params, config, ["layer scale folded into attn.proj and mlp.fc2: those values are no longer bit-identical"]


def torch_model(params, config: ModelConfig, *, name="the checkpoint", fold_layer_scale: bool = False):
  """(the transformers VideoMAE that `--to-hf` would write, built in memory with float32 weights; warnings)."""
  import transformers

  params, config, warnings = _without_layer_scale(params, config, name, fold_layer_scale)
  hf_config, hf_warnings = to_hf_config(config)
  model_class = getattr(transformers, hf_config["architectures"][0])
  model = model_class(transformers.VideoMAEConfig.from_dict(hf_config))
  # The file format's q_bias / v_bias are the modules' query.bias / value.bias (from_pretrained renames them).
  renamed = {".q_bias": ".query.bias", ".v_bias": ".value.bias"}
  state = {next((k.replace(old, new) for old, new in renamed.items() if k.endswith(old)), k): _to_torch(v).float()
           for k, v in flax_to_torch(params, HF, config).items()}
  model.load_state_dict(state, strict=True)
  return model.eval(), warnings + hf_warnings


def hf_preprocessor_config(config: ModelConfig) -> dict[str, Any]:
  """How transformers' VideoMAE image processor prepares frames as this model was trained and is
  evaluated: the short side resized to the model's size (bilinear), a centre crop, ImageNet mean and std."""
  from gardener_jax.data.sampling import IMAGENET_MEAN, IMAGENET_STD

  side = config.image_size
  return {"image_processor_type": "VideoMAEImageProcessor", "do_resize": True, "size": {"shortest_edge": side},
          "resample": 2, "do_center_crop": True, "crop_size": {"height": side, "width": side}, "do_rescale": True,
          "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [round(float(v), 6) for v in IMAGENET_MEAN],
          "image_std": [round(float(v), 6) for v in IMAGENET_STD]}


def fold_layer_scale_into_linears(params, config: ModelConfig):
  """gamma ⊙ (W x + b) = (gamma ⊙ W) x + gamma ⊙ b: the same function without layer scale params."""
  blocks = dict(params["blocks"])
  gamma_1, gamma_2 = blocks.pop("gamma_1"), blocks.pop("gamma_2")

  def scaled(linear, gamma):
    return {"kernel": linear["kernel"] * gamma[:, None, :], "bias": linear["bias"] * gamma}

  blocks["attn"] = {**blocks["attn"], "proj": scaled(blocks["attn"]["proj"], gamma_1)}
  blocks["mlp"] = {**blocks["mlp"], "fc2": scaled(blocks["mlp"]["fc2"], gamma_2)}
  return {**params, "blocks": blocks}, config.replace(layer_scale=False)


def to_hf_config(config: ModelConfig) -> tuple[dict[str, Any], list[str]]:
  warnings = []
  if config.use_mean_pooling and not config.is_pretraining and config.head_norm_eps != 1e-5:
    warnings.append(f"HuggingFace fixes fc_norm's eps at 1e-5; this model uses {config.head_norm_eps} "
                    "(logits differ by about 1e-6)")
  if not config.use_mean_pooling and config.head_norm_eps != config.norm_eps:
    warnings.append(f"HuggingFace uses one eps ({config.norm_eps}) for the blocks and the final norm; "
                    f"this model's final norm uses {config.head_norm_eps}")
  names = config.class_names or [f"LABEL_{i}" for i in range(config.num_classes)]
  if len(set(names)) != len(names):
    raise ConversionError(f"class names {list(names)} repeat a name; HuggingFace's label2id needs distinct names")
  if config.is_pretraining:
    architecture = "VideoMAEForPreTraining"
  elif config.num_classes or config.use_mean_pooling:
    architecture = "VideoMAEForVideoClassification"
  else:
    architecture = "VideoMAEModel"
  hf = {
      "architectures": [architecture], "model_type": "videomae",
      "hidden_size": config.width, "num_hidden_layers": config.depth, "num_attention_heads": config.num_heads,
      "intermediate_size": config.mlp_dim, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
      "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02, "layer_norm_eps": config.norm_eps,
      "image_size": config.image_size, "patch_size": config.patch_size, "num_channels": config.in_channels,
      "num_frames": config.num_frames, "tubelet_size": config.tubelet_size, "qv_bias": True, "qkv_bias": True,
      "use_mean_pooling": config.use_mean_pooling,
      "id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)},
      "gardener_kept_blocks": list(config.kept_blocks), "gardener_original_depth": config.original_depth,
  }
  if d := config.decoder:
    hf.update(decoder_hidden_size=d.width, decoder_num_hidden_layers=d.depth, decoder_num_attention_heads=d.num_heads,
              decoder_intermediate_size=d.mlp_dim, norm_pix_loss=d.norm_pix_loss)
    if (d.norm_eps, d.head_norm_eps) != (config.norm_eps, 1e-5):
      warnings.append(f"HuggingFace's decoder uses the encoder's eps ({config.norm_eps}) in its blocks and 1e-5 in "
                      f"its final norm; this decoder uses {d.norm_eps} and {d.head_norm_eps} (outputs differ slightly)")
  return hf, warnings


def _to_torch(a: np.ndarray):
  import ml_dtypes
  import torch

  a = np.ascontiguousarray(a)
  if a.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(a)


def _save_torch(tensors: dict[str, np.ndarray], out: pathlib.Path, config: ModelConfig, overwrite: bool):
  import torch

  with atomic_path(out, overwrite) as tmp:
    torch.save({"model": {k: _to_torch(v) for k, v in tensors.items()}, "gardener_config": config.to_dict()}, tmp)


def _report_markdown(report: dict[str, Any]) -> str:
  lines = ["# Conversion report", "", f"- source: `{report['source']}`", f"- layout: {report['layout']} "
           f"({report['kind']})", f"- parameters: {report['num_params']:,} ({', '.join(report['dtypes'])})", "",
           "| field | value | from |", "|---|---|---|"]
  lines += [f"| {k} | {v} | {report['config_sources'].get(k, 'default')} |" for k, v in report["config"].items()]
  lines += ["", f"## Mapped ({len(report['mapped'])} Flax leaves)", "", "| flax | torch |", "|---|---|"]
  lines += [f"| `{m['flax']}` | {', '.join(f'`{t}`' for t in m['torch'])} |" for m in report["mapped"]]
  lines += ["", f"## Ignored ({len(report['ignored'])})", ""]
  lines += [f"- `{k}`: {why}" for k, why in report["ignored"].items()]
  return "\n".join(lines) + "\n"
