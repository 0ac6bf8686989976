"""Masked video pretraining (SPEC §8) on the data-parallel loop of `train`: the same sharding, orbax
resume, agreed preemption, non-finite guard and metrics as finetuning, with the masked-reconstruction
loss on tube-masked clips and no labels.

  gardener pretrain --config configs/pretrain_demo.py --workdir runs/pretrain_demo

The job writes DIR/pretrained (a pretraining checkpoint: encoder and decoder, which
`gardener_jax.load_pretraining_checkpoint` loads and `gardener prune`, the converter and finetuning
read), DIR/report.{json,md}, the loss curve and DIR/reconstructions.png.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gardener_jax import files, report, train
from gardener_jax.checkpoint import count_params, save_checkpoint
from gardener_jax.data import input_pipeline, sampling, sources
from gardener_jax.evaluate import reconstruction_evaluator, video_tube_masks
from gardener_jax.models import DecoderConfig, ModelConfig
from gardener_jax.models.pretraining import (VideoMAEPretraining, init_pretraining_params, masked_per_clip,
                                             pixel_tubes, reconstruct, tube_masks, untubes)
from gardener_jax.sharding import make_mesh, on_primary

CHECKPOINT = "pretrained"


def masked_reconstruction_loss(model: VideoMAEPretraining, mask_ratio: float) -> train.LossFn:
  """Fresh tube masks for every clip of every step (drawn from the step's rng), then the model's loss."""
  masked = masked_per_clip(model.config, mask_ratio)

  def loss_fn(params, batch, rng):
    mask_rng, dropout_rng = jax.random.split(rng)
    clips = sampling.normalize(batch["clips"])  # float32: the targets come from it; the patch embedding casts
    masks = tube_masks(mask_rng, clips.shape[0], model.config, mask_ratio)
    out = model.apply({"params": params}, clips, masks, train=True, num_masked=masked, rngs={"dropout": dropout_rng})
    return out["loss"], {}
  return loss_fn


def model_config(config, section) -> ModelConfig:
  """The encoder (`config.model`, `config.data`'s clips) and decoder (`section.mae`) of masked
  pretraining; the encoder ends in a LayerNorm, as the release's pretraining encoder does."""
  m, d = config.model, section.mae.decoder
  decoder = DecoderConfig(width=d.width, depth=d.depth, num_heads=d.num_heads, mlp_dim=d.mlp_dim,
                          norm_pix_loss=section.mae.norm_pix_loss)
  return ModelConfig.from_job(m, config.data, use_mean_pooling=False, drop_path_rate=m.get("drop_path_rate", 0.0),
                              remat=m.get("remat", False), decoder=decoder)


def fit_masked_autoencoder(*, model_config: ModelConfig, params, splits, config, seed: int, workdir,
                           pipelines) -> dict:
  """`train.fit` with the masked-reconstruction loss; the validation split (if any) is scored by its
  reconstruction loss on fixed masks and chooses `best/`; labels are never read."""
  model = VideoMAEPretraining(model_config, dtype=jnp.dtype(config.train.dtype), scan_blocks=train.scans_blocks(config))
  mask_ratio = config.mae.mask_ratio
  evaluators = {}
  if splits.val is not None:
    evaluators["val"] = reconstruction_evaluator(make_mesh(), model, splits.val, pipelines, mask_ratio, seed, "val")
  return train.fit(params=params, loss_fn=masked_reconstruction_loss(model, mask_ratio), depth=model_config.depth,
                   train_source=splits.train, evaluators=evaluators, config=config, seed=seed, workdir=workdir,
                   pipelines=pipelines)


def reconstruction_examples(params, config: ModelConfig, source, pipelines, mask_ratio: float, seed: int,
                            count: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(original, masked input, reconstruction) of the first view of `count` videos of `source`, in
  [0, 1], the masks seeded as the validation loss's are (run it on one process: it reads every one of them)."""
  videos = sources.View(source, range(min(count, len(source))))
  batch = next(iter(input_pipeline.eval_pipeline(videos, pipelines.eval_spec, count)))  # one shard: all of them
  clips = sampling.normalize(batch["clips"][:, 0])
  masks = video_tube_masks(seed, batch["video_index"], batch["clips"].shape[1], config, mask_ratio)[:, 0]
  out = VideoMAEPretraining(config).apply({"params": params}, clips, masks)
  pixels, _, _ = pixel_tubes(clips, config)
  grey = jnp.where(masks[..., None, None], 0.5, pixels)
  return (np.asarray(untubes(pixels, config)), np.asarray(untubes(grey, config)),
          np.asarray(reconstruct(clips, masks, out["pred"], config)))


def run(config, workdir, section=None, classes=None) -> dict:
  """Masked pretraining from scratch in `workdir`: the checkpoint and the report. `section` holds
  `mae`, `train` and `optim` (default: the config itself, a `job = 'pretrain'` config); the clips are
  those of `classes` (default `config.data.classes`; labels are never read)."""
  section = section or config
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  classes = list(config.data.classes if classes is None else classes)
  sources.prepare(config.data)
  splits = sources.from_config(config.data, classes, config.seed)
  pipelines = input_pipeline.pipelines_from_config(config.data, config.seed)
  mae_config, mask_ratio = model_config(config, section), section.mae.mask_ratio
  logging.info("masked pretraining: %d train / %s val videos, depth %d, width %d, decoder %s, mask ratio %s",
               len(splits.train), len(splits.val) if splits.val is not None else "no", mae_config.depth,
               mae_config.width, mae_config.decoder, mask_ratio)
  result = fit_masked_autoencoder(model_config=mae_config, params=init_pretraining_params(mae_config, config.seed),
                                  splits=splits, config=section, seed=config.seed, workdir=workdir / "train",
                                  pipelines=pipelines)
  saved = mae_config.replace(drop_path_rate=0.0, remat=False)
  save_checkpoint(workdir / CHECKPOINT, result["params"], saved, overwrite=True)

  losses = [h["loss"] for h in result["history"] if "loss" in h]
  summary = {
      "checkpoint": str(workdir / CHECKPOINT), "params": count_params(result["params"]), "steps": result["steps"],
      "mask_ratio": mask_ratio, "masked_tokens_per_clip": masked_per_clip(saved, mask_ratio),
      "train_loss": {"first": losses[0] if losses else None, "last": losses[-1] if losses else None},
      "validation": None if result["val"] is None else {"source": splits.val_description, "final": result["val"],
                                                         "best_step": result["best_step"]},
      "throughput": {"train_clips_per_sec": result["train_clips_per_sec"]},
  }

  def write_reports():
    files.write_json(workdir / "report.json", summary)
    shown = splits.val if splits.val is not None else splits.train
    examples = reconstruction_examples(result["params"], saved, shown, pipelines, mask_ratio, config.seed)
    report.plot_reconstructions(*examples, workdir / "reconstructions.png")
    report.write_pretraining_report(workdir, summary, result["history"])
  on_primary("report", write_reports)
  logging.info("masked pretraining: train loss %.4f → %.4f; checkpoint %s", summary["train_loss"]["first"] or 0,
               summary["train_loss"]["last"] or 0, workdir / CHECKPOINT)
  return summary
