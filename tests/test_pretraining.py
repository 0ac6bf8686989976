"""Masked pretraining against PyTorch: the Flax model's loss, predictions and gradients equal
HuggingFace's VideoMAEForPreTraining and the original release's model on converted weights; pretraining
checkpoints convert both ways bit for bit; tube masks are what the release draws."""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torch.nn.functional as F
import transformers

import gardener_jax
from gardener_jax.data.sampling import IMAGENET_MEAN, IMAGENET_STD
from gardener_jax.models import DecoderConfig, ModelConfig
from gardener_jax.models.pretraining import (VideoMAEPretraining, init_pretraining_params, masked_per_clip,
                                             tube_masks)
from gardener_jax.models.videomae import per_block, stacked
from tests import factories
from tests.torch_reference import PretrainVisionTransformer
from tools.convert_torch import HF, ORIGINAL, convert, export
from tools.convert_torch.layouts import canonical_key, torch_to_flax
from tools.convert_torch.read import LazyTensors, read_source

SHAPES = {  # tubelet 1 and 2; non-square token grids (T' ≠ H' = W'); decoder width 16 ≠ encoder width 32
    "tubelet2": dict(),
    "tubelet1": dict(tubelet_size=1),
    "grid_4x3x3": dict(num_frames=8, image_size=48),
    "mean_pooling": dict(use_mean_pooling=True),  # an encoder without a final norm
}


def _mask(config: ModelConfig, batch=2, seed=0, ratio=0.75) -> np.ndarray:
  return np.array(tube_masks(jax.random.key(seed), batch, config, ratio))


def _flax_loss_and_grads(model, params, clips, mask):
  def loss(p):
    out = model.apply({"params": p}, clips, mask, num_masked=int(mask[0].sum()))
    return out["loss"], out["pred"]
  (value, pred), grads = jax.value_and_grad(loss, has_aux=True)(params)
  return float(value), np.asarray(pred), grads


def _torch_grads(torch_model, layout: str, config: ModelConfig) -> dict:
  """The torch model's gradients, moved into the Flax layout by the converter's own rules."""
  grads = {canonical_key(layout, name): p.grad.detach().numpy() for name, p in torch_model.named_parameters()
           if p.grad is not None and not name.endswith("key.bias")}
  return torch_to_flax(LazyTensors({k: v.shape for k, v in grads.items()}, grads.__getitem__), layout, config)[0]


def _assert_grads_close(ours, theirs):
  flat_ours = dict(jax.tree_util.tree_leaves_with_path(ours))
  flat_theirs = dict(jax.tree_util.tree_leaves_with_path(theirs))
  assert flat_ours.keys() == flat_theirs.keys()
  for path, expected in flat_theirs.items():
    expected = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(flat_ours[path]), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max(),
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("shape", SHAPES)
def test_huggingface_pretraining_parity(shape, tmp_path):
  overrides = SHAPES[shape]
  torch_model = factories.hf_pretraining(seed=1, **overrides)
  torch_model.save_pretrained(tmp_path / "hf")
  convert(tmp_path / "hf", tmp_path / "flax")
  model, params, config = gardener_jax.load_pretraining_checkpoint(tmp_path / "flax")
  assert config.decoder.width == 16 and config.width == 32 and set(params) >= {"decoder", "mask_token", "blocks"}
  clips, mask = factories.clips(overrides), _mask(config)

  torch_out = torch_model.train()(torch.from_numpy(clips).permute(0, 1, 4, 2, 3), torch.from_numpy(mask))
  torch_out.loss.backward()
  loss, pred, grads = _flax_loss_and_grads(model, params, clips, mask)
  np.testing.assert_allclose(loss, torch_out.loss.item(), rtol=1e-5)
  np.testing.assert_allclose(pred, torch_out.logits.detach().numpy(), atol=1e-5, rtol=0)
  assert pred.shape == (2, masked_per_clip(config, 0.75), 3 * config.tubelet_size * 16 * 16)
  _assert_grads_close(grads, _torch_grads(torch_model, HF, config))


def _release_loss(x, mask, pred, tubelet: int, patch: int):
  """The release's pretraining loss (engine_for_pretraining): x (B, C, T, H, W) ImageNet-normalised."""
  mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None, None]
  std = torch.tensor(IMAGENET_STD)[None, :, None, None, None]
  pixels = x * std + mean
  b, c, t, h, w = pixels.shape
  tubes = pixels.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
  tubes = tubes.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, tubelet * patch * patch, c)
  tubes = (tubes - tubes.mean(-2, keepdim=True)) / (tubes.var(-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
  labels = tubes.reshape(b, tubes.shape[1], -1)[mask].reshape(b, -1, tubelet * patch * patch * c)
  return F.mse_loss(pred, labels)


def _release_model(seed=2, **overrides):
  c = dict(width=32, depth=3, num_heads=4, mlp_dim=128, num_frames=8, image_size=48, decoder_width=16,
           decoder_depth=2, decoder_heads=2, **overrides)
  torch.manual_seed(seed)
  model = PretrainVisionTransformer(**c)
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in model.parameters():
      param.add_(0.05 * torch.randn(param.shape, generator=generator))
  return model, c


def _save_release(model, c, path, dtype=torch.float32):
  args = argparse.Namespace(model="pretrain_videomae_custom", decoder_depth=c["decoder_depth"],
                            num_frames=c["num_frames"], input_size=c["image_size"], tubelet_size=2,
                            normlize_target=True, mask_ratio=0.75)
  torch.save({"model": {k: v.to(dtype) for k, v in model.state_dict().items()}, "args": args}, path)


def test_original_release_pretraining_parity(tmp_path):
  torch_model, c = _release_model()
  _save_release(torch_model, c, tmp_path / "pretrain.pth")
  report = convert(tmp_path / "pretrain.pth", tmp_path / "flax", overrides=dict(num_heads=4, decoder_num_heads=2))
  assert report["kind"] == "pretraining" and report["config_sources"]["decoder.depth"] == "weight shapes"
  model, params, config = gardener_jax.load_pretraining_checkpoint(tmp_path / "flax")
  assert (config.decoder.depth, config.decoder.norm_eps, config.num_frames) == (2, 1e-6, 8)
  clips, mask = factories.clips(dict(num_frames=8, image_size=48)), _mask(config, seed=3, ratio=0.9)

  x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3)
  torch_pred = torch_model(x, torch.from_numpy(mask))
  torch_loss = _release_loss(x, torch.from_numpy(mask), torch_pred, 2, 16)
  torch_loss.backward()
  loss, pred, grads = _flax_loss_and_grads(model, params, clips, mask)
  np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-5)
  np.testing.assert_allclose(pred, torch_pred.detach().numpy(), atol=1e-5, rtol=0)
  _assert_grads_close(grads, _torch_grads(torch_model, ORIGINAL, config))


def _bits(tensors: dict) -> dict:
  return {k: (v.dtype, v.shape, np.ascontiguousarray(v).tobytes()) for k, v in tensors.items()}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_pretraining_checkpoints_round_trip_bit_exactly(tmp_path, dtype):
  torch_dtype = getattr(torch, dtype)
  hf = factories.hf_pretraining(seed=4)
  hf.to(torch_dtype).save_pretrained(tmp_path / "hf")
  convert(tmp_path / "hf", tmp_path / "flax_hf")
  export(tmp_path / "flax_hf", tmp_path / "hf_again", HF)
  original = {k: v for k, v in read_source(tmp_path / "hf").tensors.items() if not k.endswith("key.bias")}
  assert _bits(original) == _bits(dict(read_source(tmp_path / "hf_again").tensors.items()))
  _, params, _ = gardener_jax.load_pretraining_checkpoint(tmp_path / "flax_hf")
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(dtype)}

  release, c = _release_model(seed=5)
  _save_release(release, c, tmp_path / "pretrain.pth", torch_dtype)
  convert(tmp_path / "pretrain.pth", tmp_path / "flax_release", overrides=dict(num_heads=4, decoder_num_heads=2))
  export(tmp_path / "flax_release", tmp_path / "again.pth", ORIGINAL)
  assert _bits(dict(read_source(tmp_path / "pretrain.pth").tensors.items())) == _bits(
      dict(read_source(tmp_path / "again.pth").tensors.items()))


def test_exported_pretraining_directory_loads_in_transformers_with_equal_loss(tmp_path):
  hf = factories.hf_pretraining(seed=6)
  hf.save_pretrained(tmp_path / "hf")
  convert(tmp_path / "hf", tmp_path / "flax")
  export(tmp_path / "flax", tmp_path / "exported", HF)
  reloaded = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "exported").eval()
  clips, mask = factories.clips(), _mask(gardener_jax.load_pretraining_checkpoint(tmp_path / "flax")[2], seed=7)
  x, m = torch.from_numpy(clips).permute(0, 1, 4, 2, 3), torch.from_numpy(mask)
  with torch.no_grad():
    assert reloaded(x, m).loss.item() == hf.eval()(x, m).loss.item()


def test_per_block_layout_computes_the_same_loss_and_gradients():
  config = ModelConfig(width=32, depth=2, num_heads=4, mlp_dim=64, num_frames=4, image_size=32, use_mean_pooling=False,
                       decoder=DecoderConfig(width=16, depth=2, num_heads=2, mlp_dim=32))
  params = init_pretraining_params(config, 3, 0.75)
  blocks = per_block(params)
  assert sorted(blocks["blocks"]) == sorted(blocks["decoder"]["blocks"]) == ["0", "1"]
  clips, mask = factories.clips(), _mask(config)
  loss, pred, grads = _flax_loss_and_grads(VideoMAEPretraining(config), params, clips, mask)
  loss_per_block, pred_per_block, grads_per_block = _flax_loss_and_grads(
      VideoMAEPretraining(config, scan_blocks=False), blocks, clips, mask)
  np.testing.assert_allclose(loss_per_block, loss, rtol=1e-6)
  np.testing.assert_allclose(pred_per_block, pred, atol=1e-6, rtol=0)
  _assert_grads_close(stacked(grads_per_block), grads)


def test_tube_masks_hide_the_same_positions_in_every_frame():
  config = ModelConfig(width=32, depth=1, num_heads=4, mlp_dim=64, num_frames=8, image_size=80)  # 4 × 5 × 5 tokens
  masks = np.asarray(tube_masks(jax.random.key(0), 6, config, 0.9)).reshape(6, 4, 25)
  assert masked_per_clip(config, 0.9) == 4 * 22 == masks[0].sum()  # ⌊0.9 · 25⌋ = 22 per frame, the release's
  assert np.all(masks.sum(axis=(1, 2)) == 88)
  assert np.all(masks == masks[:, :1])  # the same spatial positions at every temporal index
  assert len({m[0].tobytes() for m in masks}) == 6  # each clip its own positions
  again = np.asarray(tube_masks(jax.random.key(0), 6, config, 0.9)).reshape(6, 4, 25)
  other = np.asarray(tube_masks(jax.random.key(1), 6, config, 0.9)).reshape(6, 4, 25)
  assert np.array_equal(masks, again) and not np.array_equal(masks, other)


def test_pretraining_from_scratch_is_initialised_as_the_release_initialises_it():
  """Xavier-uniform linear layers in the encoder's and decoder's blocks and the decoder head; PyTorch's default
  (uniform within ±1/√fan_in) for the patch embedding and encoder_to_decoder; the mask token within ±0.02."""
  config = ModelConfig(width=64, depth=2, num_heads=4, mlp_dim=256, num_frames=4, image_size=64,
                       decoder=DecoderConfig(width=48, depth=2, num_heads=4, mlp_dim=192))
  params = init_pretraining_params(config, 0)

  def uniform(x, bound):
    x = np.asarray(x)
    assert np.abs(x).max() <= bound and abs(x.std() / (bound / np.sqrt(3)) - 1) < 0.05, (x.std(), bound)

  for blocks in (params["blocks"], params["decoder"]["blocks"]):
    for kernel in (blocks["attn"]["qkv"]["kernel"], blocks["attn"]["proj"]["kernel"], blocks["mlp"]["fc1"]["kernel"],
                   blocks["mlp"]["fc2"]["kernel"]):
      uniform(kernel, np.sqrt(6 / sum(kernel.shape[1:])))
      assert not np.array_equal(kernel[0], kernel[1])  # each block its own draw
  uniform(params["decoder"]["head"]["kernel"], np.sqrt(6 / (48 + 3 * 2 * 16 * 16)))
  fan_in = 3 * 2 * 16 * 16
  uniform(params["patch_embed"]["proj"]["kernel"], fan_in**-0.5)
  assert 0 < np.abs(params["patch_embed"]["proj"]["bias"]).max() <= fan_in**-0.5
  uniform(params["encoder_to_decoder"]["kernel"], 64**-0.5)
  assert 0 < np.abs(params["mask_token"]).max() <= 0.02
  assert not np.any(params["blocks"]["attn"]["q_bias"]) and not np.any(params["blocks"]["mlp"]["fc1"]["bias"])


def test_load_checkpoint_reads_a_pretraining_checkpoint_as_its_pooled_encoder(tmp_path):
  """As the release finetunes it: the final norm dropped, the last block's tokens mean-pooled, a fresh fc_norm."""
  torch_model = factories.hf_pretraining(seed=3)
  torch_model.save_pretrained(tmp_path / "hf")
  convert(tmp_path / "hf", tmp_path / "flax")
  model, params, config = gardener_jax.load_checkpoint(tmp_path / "flax")
  assert not set(params) & {"norm", "decoder", "mask_token", "head"} and config.use_mean_pooling
  clips = factories.clips()
  with torch.no_grad():
    hidden = torch_model.videomae(torch.from_numpy(clips).permute(0, 1, 4, 2, 3), output_hidden_states=True)
  expected = F.layer_norm(hidden.hidden_states[-1].mean(dim=1), (config.width,), eps=1e-6).numpy()
  features = np.asarray(model.apply({"params": params}, clips, train=False))
  assert features.shape == (2, 32)
  np.testing.assert_allclose(features, expected, rtol=0, atol=1e-5)


def test_masks_must_hide_one_count_and_classifiers_are_not_pretraining_checkpoints(tmp_path):
  factories.hf_classifier().save_pretrained(tmp_path / "hf")
  convert(tmp_path / "hf", tmp_path / "flax")
  with pytest.raises(ValueError, match="not a pretraining checkpoint"):
    gardener_jax.load_pretraining_checkpoint(tmp_path / "flax")
  factories.hf_pretraining().save_pretrained(tmp_path / "hf_pre")
  convert(tmp_path / "hf_pre", tmp_path / "pre")
  model, params, config = gardener_jax.load_pretraining_checkpoint(tmp_path / "pre")
  mask = _mask(config)
  mask[1, np.flatnonzero(~mask[1])[0]] = True
  with pytest.raises(ValueError, match="every clip must mask the same number of tokens"):
    model.apply({"params": params}, factories.clips(), mask)


def test_a_pruned_pretraining_checkpoint_is_the_masked_autoencoder_without_those_blocks(tmp_path):
  from gardener_jax import prune

  torch_model = factories.hf_pretraining(seed=8, depth=3)
  torch_model.save_pretrained(tmp_path / "hf")
  convert(tmp_path / "hf", tmp_path / "flax")
  prune.prune_checkpoint(tmp_path / "flax", tmp_path / "pruned", blocks=[2])
  model, params, config = gardener_jax.load_pretraining_checkpoint(tmp_path / "pruned")
  assert config.kept_blocks == (1, 3) and config.decoder.depth == 1

  del torch_model.videomae.encoder.layer[1]  # the reference: block 2 deleted from the PyTorch model
  clips, mask = factories.clips(), _mask(config, seed=9)
  x, m = torch.from_numpy(clips).permute(0, 1, 4, 2, 3), torch.from_numpy(mask)
  with torch.no_grad():
    expected = torch_model.eval()(x, m)
  ours = model.apply({"params": params}, clips, mask)
  np.testing.assert_allclose(float(ours["loss"]), expected.loss.item(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ours["pred"]), expected.logits.numpy(), atol=1e-5, rtol=0)

  export(tmp_path / "pruned", tmp_path / "hf_pruned", HF)
  reloaded = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf_pruned").eval()
  assert reloaded.config.num_hidden_layers == 2
  with torch.no_grad():
    np.testing.assert_allclose(reloaded(x, m).loss.item(), expected.loss.item(), rtol=1e-6)


# --- the pretraining job ------------------------------------------------------------------------------

def _toy_pretraining_config(data_dir, epochs: int):
  from configs import pretrain_demo

  config = pretrain_demo.get_config()
  config.data.update(config="small", data_dir=str(data_dir), image_size=32, num_frames=4, sampling_rate=4,
                     num_clips=1, val_fraction=0.25)
  config.model.update(width=48, depth=2, num_heads=4, mlp_dim=96, patch_size=8)  # 2 × 4 × 4 tokens
  config.mae.decoder.update(width=32, depth=1, num_heads=2, mlp_dim=64)
  config.train.update(epochs=epochs, batch_size=16, eval_every_epochs=50, log_every=20)
  config.optim.update(lr=3e-3, warmup_steps=20)
  config.train.scan_blocks = False  # trained in the per-block layout, saved stacked: the tests below read it
  return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """Masked pretraining of a tiny VideoMAE on the small synthetic set: 900 steps, about 45 s."""
  from gardener_jax import pretrain

  workdir = tmp_path_factory.mktemp("pretrain")
  config = _toy_pretraining_config(tmp_path_factory.mktemp("data"), epochs=150)
  return pretrain.run(config, workdir), workdir, config


def test_masked_pretraining_learns_to_reconstruct(pretrained):
  from gardener_jax.data import input_pipeline, sources
  from gardener_jax.evaluate import reconstruction_evaluator
  from gardener_jax.sharding import make_mesh

  summary, workdir, config = pretrained
  model, params, model_config = gardener_jax.load_pretraining_checkpoint(workdir / "pretrained")
  assert model_config.decoder.depth == 1 and not model_config.use_mean_pooling and summary["steps"] == 900
  val = sources.from_config(config.data, (), config.seed).val
  evaluate = reconstruction_evaluator(make_mesh(), model, val, input_pipeline.pipelines_from_config(config.data, 0),
                                      config.mae.mask_ratio, config.seed, "val")
  learned = evaluate(params)["loss"]
  assert learned == pytest.approx(summary["validation"]["final"]["loss"], rel=1e-5)
  # Predicting each hidden tube's mean (zero on the normalised targets: a head of zeros) scores ≈ 1.
  tube_mean = evaluate({**params, "decoder": {**params["decoder"], "head": jax.tree.map(
      jnp.zeros_like, params["decoder"]["head"])}})["loss"]
  assert 0.95 < tube_mean < 1.0 and learned < 0.85 * tube_mean, (learned, tube_mean)
  assert summary["train_loss"]["last"] < 0.85 * summary["train_loss"]["first"]
  assert all((workdir / f).is_file() for f in ("report.md", "report.json", "curves.png", "reconstructions.png"))
  best = (workdir / "train" / "best").absolute()
  with ocp.StandardCheckpointer() as checkpointer:  # trained one block at a time, kept in the checkpoints' layout
    chosen = checkpointer.restore(next(p for p in best.iterdir() if p.name.isdigit()) / "default")
  assert {leaf.shape[0] for leaf in jax.tree.leaves(chosen["blocks"])} == {2}
  assert {leaf.shape[0] for leaf in jax.tree.leaves(chosen["decoder"]["blocks"])} == {1}


def test_a_pretraining_checkpoint_finetunes_as_the_release_does(pretrained, tmp_path):
  """Mean pooling and a fresh fc_norm, the encoder's final norm and the decoder dropped: not token 0."""
  from configs import demo
  from gardener_jax import pipeline

  _, workdir, pretraining = pretrained
  config = demo.get_config()
  config.data.update(dict(pretraining.data), classes=("square_right", "square_left"), val_fraction=0.0)
  config.init.source = str(workdir / "pretrained")
  config.prune.update(criterion="entropy", discretize="hist:64", ratio=0.5)
  config.train.update(epochs=2, batch_size=16)
  summary = pipeline.run(config, tmp_path / "run")
  model, params, final = gardener_jax.load_checkpoint(tmp_path / "run" / "final")
  assert final.use_mean_pooling and final.decoder is None and final.num_classes == 2 and final.head_norm_eps == 1e-6
  assert set(params) == {"patch_embed", "blocks", "fc_norm", "head"} and summary["removed_blocks"] == [
      b for b in (1, 2) if b not in summary["kept_blocks"]]

  from gardener_jax.models.surgery import classifier_from_pretraining
  stored = gardener_jax.load_pretraining_checkpoint(workdir / "pretrained")[1]
  fresh, fresh_config = classifier_from_pretraining(stored, gardener_jax.load_pretraining_checkpoint(
      workdir / "pretrained")[2], 2, seed=0)
  assert np.all(fresh["fc_norm"]["scale"] == 1) and np.all(fresh["fc_norm"]["bias"] == 0)
  assert "norm" not in fresh and fresh["blocks"] is stored["blocks"] and fresh_config.use_mean_pooling


def test_masked_pretraining_beats_random_init_after_the_same_finetune(pretrained, tmp_path):
  """The release's finetuning recipe (layer decay 0.75), 50 epochs on the 4 classes, 3 seeds, from the
  pretrained encoder and from random init (measured: 72.9 ± 8.2 % against 39.6 ± 3.9 % test WAR; chance 25 %)."""
  from configs import demo
  from gardener_jax import pipeline
  from gardener_jax.models import init_params

  _, workdir, pretraining = pretrained
  _, stored, stored_config = gardener_jax.load_pretraining_checkpoint(workdir / "pretrained")
  war = {"pretrained": [], "random": []}
  for seed in range(3):
    config = demo.get_config()
    config.seed = seed
    config.data.update(dict(pretraining.data), val_fraction=0.0)
    config.model.update(dict(pretraining.model))
    config.train.update(epochs=50, batch_size=16, eval_every_epochs=50, log_every=50)
    config.optim.update(lr=2e-3, warmup_steps=10, layer_decay=0.75)
    random_config = ModelConfig.from_job(config.model, config.data, num_classes=4)
    starts = {"pretrained": (stored, stored_config), "random": (init_params(random_config, seed), random_config)}
    for name, (params, model_config) in starts.items():
      result = pipeline.finetune_stage(config, config, params, model_config, [], tmp_path / f"{name}{seed}")
      war[name].append(result["test"]["war"])
  assert np.mean(war["pretrained"]) >= 55 and np.mean(war["pretrained"]) - np.mean(war["random"]) >= 15, war
