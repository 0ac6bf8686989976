"""Converter: Flax logits equal PyTorch logits, round trips are bit-identical, bad input fails clearly."""

import argparse
import json
import pathlib
import re

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from gardener_jax.checkpoint import load_tree, read_config
from gardener_jax.models import sinusoid_position_table
from tests import factories
from tools.convert_torch import HF, ORIGINAL, ConversionError, convert, export
from tools.convert_torch.__main__ import main as cli

ATOL = 1e-5


def _assert_same_bytes(a: dict[str, np.ndarray], b: dict[str, np.ndarray]):
  assert sorted(a) == sorted(b)
  for key in a:
    assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
    assert a[key].tobytes() == b[key].tobytes(), key


# ---------------------------------------------------------------------------------------------
# HuggingFace

HF_SHAPES = [
    dict(),
    dict(use_mean_pooling=False, num_classes=7),
    dict(width=48, num_heads=3, mlp_dim=96, depth=2, num_frames=8, image_size=48, tubelet_size=1),
    dict(patch_size=8, num_frames=2, depth=1),
]


@pytest.mark.parametrize("shape", HF_SHAPES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "tiny")
def test_hf_parity_and_round_trip(tmp_path, shape):
  torch_model = factories.hf_classifier(**shape)
  torch_model.save_pretrained(tmp_path / "hf")
  report = convert(tmp_path / "hf", tmp_path / "flax")
  assert report["layout"] == HF and report["kind"] == "finetuned"
  assert report["config_sources"]["num_heads"] == "config.json"

  x = factories.clips(shape)
  expected = factories.hf_logits(torch_model, x)
  np.testing.assert_allclose(factories.flax_logits(tmp_path / "flax", x), expected, atol=ATOL, rtol=0)

  assert export(tmp_path / "flax", tmp_path / "hf2", HF) == []
  _assert_same_bytes(load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "hf2" / "model.safetensors"))
  reloaded = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf2").eval()
  np.testing.assert_array_equal(factories.hf_logits(reloaded, x), expected)


def test_hf_legacy_bias_names_bin_and_single_file(tmp_path):
  """query.bias/value.bias (transformers' in-memory names), pytorch_model.bin, a bare safetensors file + flags."""
  torch_model = factories.hf_classifier()
  torch_model.save_pretrained(tmp_path / "hf")
  state = load_file(tmp_path / "hf" / "model.safetensors")
  assert any(k.endswith("attention.attention.q_bias") for k in state)
  legacy = {k.replace("q_bias", "query.bias").replace("v_bias", "value.bias"): v for k, v in state.items()}
  (tmp_path / "bin").mkdir()
  (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
  torch.save({k: torch.from_numpy(v) for k, v in legacy.items()}, tmp_path / "bin" / "pytorch_model.bin")
  save_file(legacy, tmp_path / "single.safetensors")

  x = factories.clips()
  expected = factories.hf_logits(torch_model, x)
  convert(tmp_path / "bin", tmp_path / "from_bin")
  np.testing.assert_allclose(factories.flax_logits(tmp_path / "from_bin", x), expected, atol=ATOL, rtol=0)

  with pytest.raises(ConversionError, match="num_heads.*--variant.*--num_heads"):
    convert(tmp_path / "single.safetensors", tmp_path / "single")
  assert not (tmp_path / "single").exists()
  report = convert(tmp_path / "single.safetensors", tmp_path / "single",
                   overrides=dict(num_heads=4, num_frames=4, image_size=32))
  assert report["config_sources"]["num_heads"] == "flags"
  np.testing.assert_allclose(factories.flax_logits(tmp_path / "single", x), expected, atol=ATOL, rtol=0)


def test_hf_pretraining_converts_the_decoder(tmp_path):
  torch_model = factories.hf_pretraining()
  torch_model.save_pretrained(tmp_path / "hf")
  report = convert(tmp_path / "hf", tmp_path / "flax")
  assert report["kind"] == "pretraining"
  mapped = {m["flax"]: m["torch"] for m in report["mapped"]}
  assert mapped["mask_token"] == ["mask_token"] and mapped["encoder_to_decoder/kernel"] == ["encoder_to_decoder.weight"]
  assert mapped["decoder/blocks/mlp/fc1/kernel"] == ["decoder.decoder_layers.N.intermediate.dense.weight"]
  config = read_config(tmp_path / "flax")
  assert config.num_classes == 0 and (config.decoder.width, config.decoder.depth, config.decoder.num_heads) == (16, 1, 2)
  assert report["config_sources"]["decoder.num_heads"] == "config.json"

  export(tmp_path / "flax", tmp_path / "hf2", HF)
  _assert_same_bytes(load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "hf2" / "model.safetensors"))
  reloaded = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf2")
  _assert_same_bytes(factories.state_numpy(torch_model.state_dict()), factories.state_numpy(reloaded.state_dict()))


# ---------------------------------------------------------------------------------------------
# Original release

ORIGINAL_CASES = [
    (dict(), "model", ""),
    (dict(layer_scale=True), "module", "backbone."),
    (dict(use_mean_pooling=False), None, ""),
    (dict(layer_scale=True, use_mean_pooling=False, num_classes=3), "model", "encoder."),
]


@pytest.mark.parametrize("shape,entry,prefix", ORIGINAL_CASES)
def test_original_parity_and_round_trip(tmp_path, shape, entry, prefix):
  torch_model = factories.original_classifier(**shape)
  state = {prefix + k: v for k, v in torch_model.state_dict().items()}
  args = argparse.Namespace(model="vit_custom", num_frames=4, input_size=32, lr=1e-3)  # frames and size
  torch.save({entry: state, "args": args, "epoch": 3} if entry else state, tmp_path / "ckpt.pth")
  overrides = dict(num_heads=4) if entry else dict(num_heads=4, num_frames=4, image_size=32)
  report = convert(tmp_path / "ckpt.pth", tmp_path / "flax", overrides=overrides)
  assert report["layout"] == ORIGINAL
  if entry:
    assert report["config_sources"]["num_frames"] == "pickled args"
    assert report["ignored"] == {"args": "top-level entry beside the weights", "epoch": "top-level entry beside the weights"}

  x = factories.clips(shape)
  expected = factories.original_logits(torch_model, x)
  np.testing.assert_allclose(factories.flax_logits(tmp_path / "flax", x), expected, atol=ATOL, rtol=0)

  export(tmp_path / "flax", tmp_path / "back.pth", ORIGINAL)
  back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
  _assert_same_bytes(factories.state_numpy(torch_model.state_dict()), factories.state_numpy(back))

  # Exported to HuggingFace (layer scale folded), transformers runs it with the same logits.
  warnings = export(tmp_path / "flax", tmp_path / "hf", HF, fold_layer_scale=True)
  assert any("fc_norm's eps" in w for w in warnings) == (torch_model.fc_norm is not None)
  hf = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf").eval()
  np.testing.assert_allclose(factories.hf_logits(hf, x), expected, atol=1e-4, rtol=0)


def test_original_args_name_the_variant(tmp_path):
  torch_model = factories.original_classifier(width=384, num_heads=6, mlp_dim=1536, depth=1)
  args = argparse.Namespace(model="vit_small_patch16_224", num_frames=4, input_size=32)
  torch.save({"model": torch_model.state_dict(), "args": args}, tmp_path / "ckpt.pth")
  report = convert(tmp_path / "ckpt.pth", tmp_path / "flax")
  assert report["config"]["num_heads"] == 6 and report["config_sources"]["num_heads"] == "pickled args"
  assert report["config"]["image_size"] == 32  # input_size wins over the name's 224: they are one source


def test_an_incomplete_pretraining_decoder_is_an_error(tmp_path):
  encoder = factories.original_classifier(use_mean_pooling=False, num_classes=0)
  state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
  rng = torch.Generator().manual_seed(0)
  state.update({"mask_token": torch.randn(1, 1, 16, generator=rng),
                "encoder_to_decoder.weight": torch.randn(16, 32, generator=rng),
                "decoder.blocks.0.norm1.weight": torch.randn(16, generator=rng),
                "decoder.head.weight": torch.randn(1536, 16, generator=rng)})
  torch.save({"model": state}, tmp_path / "pretrain.pth")
  with pytest.raises(ConversionError, match=r"pretrain.pth: missing key 'decoder.blocks.0.mlp.fc1.weight'"):
    convert(tmp_path / "pretrain.pth", tmp_path / "flax", overrides=dict(num_heads=4, num_frames=4, image_size=32))
  assert not (tmp_path / "flax").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_values_are_kept_bit_exact(tmp_path, dtype):
  torch_model = factories.original_classifier().to(dtype)
  with torch.no_grad():  # subnormals and a negative zero must survive the transposes too
    fc1 = torch_model.blocks[1].mlp.fc1.weight
    fc1[0, :3] = torch.tensor([torch.finfo(dtype).smallest_normal / 4, -torch.finfo(dtype).smallest_normal / 8, -0.0])
  # some files store the fixed position table too, in the checkpoint's dtype (rounded to its grid)
  pos_embed = torch.from_numpy(sinusoid_position_table(8, 32))[None].to(dtype)
  torch.save({"model": {**torch_model.state_dict(), "pos_embed": pos_embed}}, tmp_path / "ckpt.pth")
  convert(tmp_path / "ckpt.pth", tmp_path / "flax", overrides=dict(num_heads=4, num_frames=4, image_size=32))
  qkv = load_tree(tmp_path / "flax")["params"]["blocks"]["attn"]["qkv"]["kernel"]
  assert qkv.dtype.name == str(dtype).removeprefix("torch.")
  export(tmp_path / "flax", tmp_path / "back.pth", ORIGINAL)
  back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
  for key, value in torch_model.state_dict().items():
    assert back[key].dtype == dtype and torch.equal(back[key].view(torch.int16), value.view(torch.int16)), key


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file and key, a non-zero exit, nothing written.

TINY_FLAGS = ["--num_heads", "4", "--num_frames", "4", "--image_size", "32"]


def _write_original(path, mutate=None):
  state = dict(factories.original_classifier().state_dict())
  if mutate:
    mutate(state)
  torch.save({"model": state}, path)
  return path


BAD_ORIGINAL = {
    "missing key": (lambda s: s.pop("blocks.1.mlp.fc2.weight"), r"missing key 'blocks\.1\.mlp\.fc2\.weight'"),
    "wrong shape": (lambda s: s.update({"blocks.2.attn.qkv.weight": torch.zeros(96, 31)}),
                    r"key 'blocks\.2\.attn\.qkv\.weight' has shape \(96, 31\), expected \(96, 32\)"),
    "non-finite": (lambda s: s["blocks.0.mlp.fc1.weight"].__setitem__((0, 0), float("nan")),
                   r"key 'blocks\.0\.mlp\.fc1\.weight' holds 1 non-finite"),
    "unknown layout": (lambda s: [s.pop(k) for k in list(s) if k.startswith("patch_embed")],
                       "unrecognised key layout"),
    "unexpected key": (lambda s: s.update({"blocks.0.attn.k_bias": torch.ones(32)}),
                       r"unexpected keys .*blocks\.0\.attn\.k_bias"),
    "position table of other clips": (
        lambda s: s.update({"pos_embed": torch.from_numpy(sinusoid_position_table(16, 32))[None]}),
        r"key 'pos_embed' has shape \(1, 16, 32\); the model's 4 frames of 32² make 8 tokens"),
}


@pytest.mark.parametrize("case", BAD_ORIGINAL)
def test_bad_original_files(tmp_path, capsys, case):
  mutate, message = BAD_ORIGINAL[case]
  src = _write_original(tmp_path / "bad.pth", mutate)
  assert cli([str(src), str(tmp_path / "out"), *TINY_FLAGS]) == 1
  err = capsys.readouterr().err
  assert str(src) in err and re.search(message, err), err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


def test_huggingface_models_it_cannot_convert_say_why(tmp_path, capsys):
  no_biases = factories.hf_config()
  no_biases.qv_bias = False
  transformers.VideoMAEForVideoClassification(no_biases).save_pretrained(tmp_path / "no_biases")
  transformers.VideoMAEModel(factories.hf_config(use_mean_pooling=True)).save_pretrained(tmp_path / "backbone")
  for name, message in [("no_biases", "qv_bias is false"), ("backbone", "VideoMAEModel that mean-pools keeps no norm")]:
    assert cli([str(tmp_path / name), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / name) in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_truncated_files(tmp_path, capsys):
  pth = _write_original(tmp_path / "full.pth")
  (tmp_path / "cut.pth").write_bytes(pth.read_bytes()[:5000])
  factories.hf_classifier().save_pretrained(tmp_path / "hf")
  data = (tmp_path / "hf" / "model.safetensors").read_bytes()
  (tmp_path / "hf" / "model.safetensors").write_bytes(data[: len(data) // 2])
  for src in (tmp_path / "cut.pth", tmp_path / "hf"):
    assert cli([str(src), str(tmp_path / "out"), *TINY_FLAGS]) == 1
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and str(src) in err, err
    assert not (tmp_path / "out").exists()


class Payload:  # would run code on unpickling without weights_only
  def __reduce__(self):
    return (print, ("executed",))


def test_refuses_arbitrary_pickles(tmp_path, capsys):
  torch.save({"model": factories.original_classifier().state_dict(), "extra": Payload()}, tmp_path / "evil.pth")
  assert cli([str(tmp_path / "evil.pth"), str(tmp_path / "out"), *TINY_FLAGS]) == 1
  captured = capsys.readouterr()
  assert "refused to unpickle" in captured.err and "executed" not in captured.out
  assert not (tmp_path / "out").exists()


def test_conflicting_sources_and_existing_output(tmp_path, capsys):
  src = _write_original(tmp_path / "ok.pth")
  assert cli([str(src), str(tmp_path / "out"), "--variant", "vit_b", "--num_frames", "4", "--image_size", "32"]) == 1
  assert "width is 32 according to weight shapes but 768 according to --variant vit_b" in capsys.readouterr().err
  assert cli([str(src), str(tmp_path / "out"), *TINY_FLAGS]) == 0
  assert cli([str(src), str(tmp_path / "out"), *TINY_FLAGS]) == 1
  assert "already exists" in capsys.readouterr().err
  assert json.loads((tmp_path / "out" / "conversion_report.json").read_text())["num_params"] > 0


def test_layer_scale_needs_folding_for_hf(tmp_path, capsys):
  torch.save({"model": factories.original_classifier(layer_scale=True).state_dict()}, tmp_path / "ls.pth")
  assert cli([str(tmp_path / "ls.pth"), str(tmp_path / "flax"), *TINY_FLAGS]) == 0
  assert cli(["--to-hf", str(tmp_path / "flax"), str(tmp_path / "hf")]) == 1
  assert "--fold_layer_scale" in capsys.readouterr().err
  assert not pathlib.Path(tmp_path / "hf").exists()
