"""The job behind `gardener_jax.main`: initial checkpoint → score → prune → finetune → evaluate → report,
every stage skipped when its output is already in the workdir.

The initial checkpoint is converted from PyTorch (`init.source` a path, or 'random_hf' for a random
transformers VideoMAE the job makes), taken as is (a gardener_jax checkpoint), or made here
(`init.source = 'pretrain'`: masked pretraining on the clips of `pretrain.classes` of the same data,
then supervised finetuning on them, stored in float16 — the embedded default, which needs nothing
downloaded). `config.seed` seeds everything: data order, augmentation,
new heads, dropout, the validation hold-out and the random criterion.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
from absl import logging

from gardener_jax import calibration, criteria, files, frameworks, pretrain, prune, report, train
from gardener_jax.checkpoint import (CONFIG_FILE, PARAMS_DIR, cast_floats, count_params, load_tree, read_config,
                                     save_checkpoint)
from gardener_jax.data import input_pipeline, sources
from gardener_jax.models import ModelConfig, init_params
from gardener_jax.models.surgery import classifier_from_pretraining, replace_head
from gardener_jax.sharding import on_primary


SOURCE_SUMMARY = "source.json"  # how the embedded default made its source model


def _is_checkpoint(path) -> bool:
  return (pathlib.Path(path) / CONFIG_FILE).is_file() and (pathlib.Path(path) / PARAMS_DIR).is_dir()


def convert_stage(config, workdir: pathlib.Path) -> pathlib.Path:
  from tools.convert_torch import convert
  from tools.convert_torch.random_init import save_random_hf_classifier

  source = config.init.source
  if source == "random_hf":
    source = workdir / "torch_hf"
    model = ModelConfig.from_job(config.model, config.data, num_classes=config.model.num_classes)
    on_primary("random_hf", lambda: source.exists() or save_random_hf_classifier(source, model, config.seed))
  if _is_checkpoint(source):
    return pathlib.Path(source)
  checkpoint = workdir / "checkpoint"

  def convert_once():
    if not checkpoint.exists():
      overrides = dict(num_heads=config.init.num_heads, num_frames=config.init.num_frames,
                       image_size=config.init.image_size)
      result = convert(source, checkpoint, variant=config.init.variant or None, overrides=overrides)
      logging.info("converted %s (%s layout, %s params)", source, result["layout"], f"{result['num_params']:,}")
  on_primary("convert", convert_once)
  return checkpoint


def training_model(model_config: ModelConfig, overrides) -> ModelConfig:
  """The model as the job trains it: drop path, dropout and remat from the config's `model` section."""
  return model_config.replace(**{k: overrides[k] for k in ("drop_path_rate", "dropout_rate",
                                                           "attention_dropout_rate", "remat") if k in overrides})


def finetune_stage(config, section, params, model_config: ModelConfig, classes, workdir: pathlib.Path) -> dict:
  """Trains `params` on `classes` of the data (all when empty) with `section.train`/`section.optim`
  and evaluates; returns fit's result with the model config, classes and validation source."""
  sources.prepare(config.data)
  splits = sources.from_config(config.data, classes, config.seed)
  if model_config.is_pretraining:
    params, model_config = classifier_from_pretraining(params, model_config, len(splits.names), config.seed)
  params, model_config = replace_head(params, model_config, splits.names, config.seed)
  model_config = training_model(model_config, config.model)
  logging.info("%s: %d train / %s val / %s test videos, %d classes, depth %d (blocks %s)", workdir.name,
               len(splits.train), len(splits.val) if splits.val is not None else "no",
               len(splits.test) if splits.test is not None else "no", len(splits.names), model_config.depth,
               list(model_config.kept_blocks))
  result = train.fit_classifier(model_config=model_config, params=params, splits=splits, config=section,
                                seed=config.seed, workdir=workdir,
                                pipelines=input_pipeline.pipelines_from_config(config.data, config.seed))
  result.update(model_config=model_config, classes=splits.names, val_description=splits.val_description)
  return result


def pretrain_stage(config, workdir: pathlib.Path) -> pathlib.Path:
  """The embedded default's source model, made as the scored release was: masked pretraining on the
  clips of `pretrain.classes` (labels unread; skipped when `pretrain.masked` is None), supervised
  finetuning on those classes, stored as `pretrain.save_dtype`. What each step gave goes to source.json."""
  checkpoint = workdir / "pretrained"
  if _is_checkpoint(checkpoint):
    return checkpoint
  p, classes = config.pretrain, list(config.pretrain.classes)
  summary = {"classes": classes}
  if p.get("masked"):
    masked = workdir / "masked_pretraining"
    done = masked / "report.json"  # written after the checkpoint
    summary["masked_pretraining"] = (files.read_json(done) if done.is_file()
                                     else pretrain.run(config, masked, section=p.masked, classes=classes))
    model_config, params = read_config(masked / pretrain.CHECKPOINT), load_tree(masked / pretrain.CHECKPOINT)["params"]
  else:
    model_config = ModelConfig.from_job(config.model, config.data, num_classes=len(classes))
    params = init_params(model_config, config.seed)
  result = finetune_stage(config, p, params, model_config, classes, workdir / "pretrain_run")
  dtype = save_dtype(p.get("save_dtype", ""), params)
  summary.update(supervised={"steps": result["steps"], "metrics": result["test"] or result["val"]},
                 saved_dtype=str(dtype))
  logging.info("source model: %s, saved as %s", summary["supervised"]["metrics"], dtype)
  on_primary("source summary", lambda: files.write_json(workdir / SOURCE_SUMMARY, summary))
  save_checkpoint(checkpoint, cast_floats(result["params"], dtype), result["model_config"].replace(
      drop_path_rate=0.0, dropout_rate=0.0, attention_dropout_rate=0.0, remat=False))
  return checkpoint


def calibration_clips(config, model_config: ModelConfig) -> calibration.Calibration:
  """The clips of the criteria that need data: `prune.calibration_clips` videos of the job's training
  split (of `data.classes`; validation hold-out excluded), drawn with `config.seed`, sampled as for evaluation."""
  splits = sources.from_config(config.data, list(config.data.classes), config.seed)
  name = f"{config.data.name}{f'/{config.data.config}' if config.data.config else ''} training split"
  return calibration.draw_clips(splits.train, model_config, config.prune.get("calibration_clips", 8), config.seed,
                                sampling_rate=config.data.sampling_rate,
                                scaled_decode=config.data.get("scaled_decode", False), name=name)


def prune_stage(config, checkpoint: pathlib.Path, workdir: pathlib.Path) -> tuple[pathlib.Path, dict | None]:
  p = config.prune
  if p.criterion == "none":
    return checkpoint, None
  out = workdir / "pruned"
  blocks = [int(b) for b in str(p.blocks).split(",") if b.strip()] if p.blocks else None

  def prune_once():
    if _is_checkpoint(out):
      return
    needs_data = not blocks and criteria.needs_data(p.criterion)
    clips = calibration_clips(config, read_config(checkpoint)) if needs_data else None
    prune.prune_checkpoint(
        checkpoint, out, criterion=None if blocks else p.criterion, ratio=None if blocks or not p.ratio else p.ratio,
        remove=None if blocks or p.ratio else p.remove, blocks=blocks, discretize=p.discretize, seed=config.seed,
        oracle=p.oracle or None, calibration=clips)
  on_primary("prune", prune_once)
  return out, files.read_json(out / "prune_report.json")


def initial_stage(config, workdir: pathlib.Path) -> pathlib.Path:
  """The checkpoint the job prunes: trained here, converted from PyTorch, or taken as is."""
  return pretrain_stage(config, workdir) if config.init.source == "pretrain" else convert_stage(config, workdir)


def save_dtype(name: str, source_params) -> jnp.dtype:
  """`train.save_dtype`: '' or 'float32' (the master weights), 'float16', 'bfloat16', or 'source'."""
  if name == "source":
    stored = {str(x.dtype) for x in jax.tree.leaves(source_params["blocks"])}
    if len(stored) != 1:
      raise ValueError(f"train.save_dtype 'source': the source checkpoint's blocks mix dtypes {sorted(stored)}")
    name = stored.pop()
  if name not in ("", "float32", "float16", "bfloat16"):
    raise ValueError(f"train.save_dtype {name!r}: expected '', float32, float16, bfloat16 or source")
  return jnp.dtype(name or "float32")


def run(config, workdir: str | os.PathLike, initial: pathlib.Path | None = None) -> dict:
  """The whole job in `workdir`; `initial` (a checkpoint directory) skips the initial stage (a sweep's runs)."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  initial = initial or initial_stage(config, workdir)
  checkpoint, pruning = prune_stage(config, initial, workdir)
  model_config, params = read_config(checkpoint), load_tree(checkpoint)["params"]
  dtype = save_dtype(config.train.get("save_dtype", ""), params)
  result = finetune_stage(config, config, params, model_config, list(config.data.classes), workdir / "finetune")
  final = result["model_config"]
  save_checkpoint(workdir / "final", cast_floats(result["params"], dtype), final, overwrite=True)

  source_summary = workdir / SOURCE_SUMMARY
  evaluated = {name: result[name] for name in ("val", "test") if result[name] is not None}
  summary = {
      "framework": "flax", "versions": frameworks.versions(),
      "initial_checkpoint": str(initial), "finetuned_checkpoint": str(workdir / "final"),
      "saved_dtype": str(dtype), "original_depth": final.original_depth, "kept_blocks": list(final.kept_blocks),
      "removed_blocks": list(final.removed_blocks),
      "source": files.read_json(source_summary) if source_summary.is_file() else None,
      "pruning": None if pruning is None else {k: pruning[k] for k in ("chosen_by", "before", "after", "ranking")},
      "params": count_params(result["params"]), "gflops": prune.gflops(final),
      "classes": result["classes"], "steps": result["steps"],
      # The test split's metrics of the final params (the validation split's when there is no test split).
      "metrics": result["test"] or result["val"],
      "validation": None if result["val"] is None else {
          "source": result["val_description"], "final": result["val"], "best_step": result["best_step"]},
      "skipped_eval_videos": {name: m["skipped"] for name, m in evaluated.items()},
      "throughput": {"train_clips_per_sec": result["train_clips_per_sec"],
                     "eval_clips_per_sec": (result["test"] or result["val"] or {}).get("clips_per_sec")},
  }
  on_primary("report", lambda: (files.write_json(workdir / "report.json", summary),
                                report.write_run_report(workdir, summary, result["history"])))
  if summary["metrics"]:
    logging.info("%s WAR %.2f UAR %.2f top-5 %.2f → %s", summary["metrics"]["split"], summary["metrics"]["war"],
                 summary["metrics"]["uar"], summary["metrics"]["top5"], workdir / "report.md")
  return summary
