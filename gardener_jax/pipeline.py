"""The job behind `gardener_jax.main`: data → initial checkpoint → score → prune → finetune →
evaluate → report, every stage skipped when its output is already in the workdir.

The initial checkpoint is converted from PyTorch (`init.source` a path, or 'random_hf' for a random
transformers VideoMAE the job makes), taken as is (a gardener_jax checkpoint), or trained here
(`init.source = 'pretrain'`: supervised on `pretrain.classes` of the same data — the embedded
default, which needs nothing downloaded).
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
from absl import logging

from gardener_jax import prune, report, train
from gardener_jax.checkpoint import CONFIG_FILE, PARAMS_DIR, load_tree, read_config, save_checkpoint
from gardener_jax.data import builders, input_pipeline
from gardener_jax.models import ModelConfig, init_params


def quiet_logging() -> None:
  """INFO logs from absl, without orbax's per-file chatter (the job and the sweep entry points)."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)


def _is_checkpoint(path) -> bool:
  return (pathlib.Path(path) / CONFIG_FILE).is_file() and (pathlib.Path(path) / PARAMS_DIR).is_dir()


def _random_hf_model(model, seed: int, directory: pathlib.Path):
  import torch
  import transformers

  torch.manual_seed(seed)
  transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(
      hidden_size=model.width, num_hidden_layers=model.depth, num_attention_heads=model.num_heads,
      intermediate_size=model.mlp_dim, num_frames=model.num_frames, image_size=model.image_size,
      patch_size=model.patch_size, tubelet_size=model.tubelet_size, num_labels=model.num_classes)).save_pretrained(directory)


def convert_stage(config, workdir: pathlib.Path) -> pathlib.Path:
  from tools.convert_torch import convert

  source = config.init.source
  if source == "random_hf":
    source = workdir / "torch_hf"
    if not source.exists():
      _random_hf_model(config.model, config.seed, source)
  if _is_checkpoint(source):
    return pathlib.Path(source)
  checkpoint = workdir / "checkpoint"
  if not checkpoint.exists():
    overrides = dict(num_heads=config.init.num_heads, num_frames=config.init.num_frames,
                     image_size=config.init.image_size)
    result = convert(source, checkpoint, variant=config.init.variant or None, overrides=overrides)
    logging.info("converted %s (%s layout, %s params)", source, result["layout"], f"{result['num_params']:,}")
  return checkpoint


def _sources(config, classes):
  data = config.data
  data_dir = pathlib.Path(data.data_dir or "data")
  name_dir = data_dir / data.name
  if not any(name_dir.glob(f"{data.config or '*'}/*/dataset_info.json")):
    builders.build(data.name, data_dir, data.config or None, data.manual_dir or None)
  train_source, info = input_pipeline.open_split(data_dir, data.name, data.train_split, data.config or None)
  eval_source, _ = input_pipeline.open_split(data_dir, data.name, data.eval_split, data.config or None)
  names = info.features["label"].names
  if classes:
    return (input_pipeline.Subset(train_source, names, classes), input_pipeline.Subset(eval_source, names, classes),
            list(classes))
  return train_source, eval_source, names


def _pipelines(config) -> input_pipeline.Pipelines:
  d = config.data
  train_spec = input_pipeline.ClipSpec(d.num_frames, d.sampling_rate, d.image_size, augment=d.augment, flip=d.flip,
                                       min_crop_area=d.min_crop_area)
  eval_spec = input_pipeline.ClipSpec(d.num_frames, d.sampling_rate, d.image_size, d.num_clips, d.num_crops, False)
  return input_pipeline.Pipelines(train_spec, eval_spec, config.seed, d.workers, d.eval_batch_size)


def with_head(params, model_config: ModelConfig, num_classes: int, seed: int):
  """Params and config for `num_classes` outputs: the head is kept if it fits, else newly initialised."""
  if model_config.num_classes == num_classes:
    return params, model_config
  config = model_config.replace(num_classes=num_classes)
  fresh = init_params(config.replace(depth=1), seed)  # only the head is taken from it
  return {**params, "head": fresh["head"]}, config


def _training_model(model_config: ModelConfig, overrides) -> ModelConfig:
  return model_config.replace(**{k: overrides[k] for k in ("drop_path_rate", "dropout_rate",
                                                           "attention_dropout_rate", "remat") if k in overrides})


def finetune_stage(config, section, params, model_config: ModelConfig, classes, workdir: pathlib.Path) -> dict:
  """Trains `params` on `classes` of the data (all when empty) and evaluates; returns fit's result."""
  train_source, eval_source, names = _sources(config, classes)
  params, model_config = with_head(params, model_config, len(names), config.seed)
  model_config = _training_model(model_config, config.model)
  logging.info("%s: %d train / %d eval videos, %d classes, depth %d (blocks %s)", workdir.name, len(train_source),
               len(eval_source), len(names), model_config.depth, list(model_config.kept_blocks))
  result = train.fit(model_config=model_config, params=params, train_source=train_source, eval_source=eval_source,
                     num_classes=len(names), config=section, workdir=workdir, pipelines=_pipelines(config))
  result.update(model_config=model_config, classes=names)
  return result


def pretrain_stage(config, workdir: pathlib.Path) -> pathlib.Path:
  """The embedded default's 'pretrained' model: a VideoMAE trained from scratch on `pretrain.classes`."""
  checkpoint = workdir / "pretrained"
  if _is_checkpoint(checkpoint):
    return checkpoint
  m = config.model
  model_config = ModelConfig(width=m.width, depth=m.depth, num_heads=m.num_heads, mlp_dim=m.mlp_dim,
                             num_classes=len(config.pretrain.classes), num_frames=config.data.num_frames,
                             image_size=config.data.image_size, patch_size=m.patch_size, tubelet_size=m.tubelet_size)
  result = finetune_stage(config, config.pretrain, init_params(model_config, config.seed), model_config,
                          list(config.pretrain.classes), workdir / "pretrain_run")
  logging.info("pretraining: %s", result["eval"])
  save_checkpoint(checkpoint, result["params"], result["model_config"].replace(
      drop_path_rate=0.0, dropout_rate=0.0, attention_dropout_rate=0.0, remat=False))
  return checkpoint


def prune_stage(config, checkpoint: pathlib.Path, workdir: pathlib.Path) -> tuple[pathlib.Path, dict | None]:
  p = config.prune
  if p.criterion == "none":
    return checkpoint, None
  out = workdir / "pruned"
  if not _is_checkpoint(out):
    blocks = [int(b) for b in str(p.blocks).split(",") if b.strip()] if p.blocks else None
    prune.prune_checkpoint(checkpoint, out, criterion=None if blocks else p.criterion,
                           ratio=None if blocks or not p.ratio else p.ratio,
                           remove=None if blocks or p.ratio else p.remove, blocks=blocks,
                           discretize=p.discretize, seed=p.seed, oracle=p.oracle or None)
  return out, json.loads((out / "prune_report.json").read_text())


def initial_stage(config, workdir: pathlib.Path) -> pathlib.Path:
  """The checkpoint the job prunes: trained here, converted from PyTorch, or taken as is."""
  return pretrain_stage(config, workdir) if config.init.source == "pretrain" else convert_stage(config, workdir)


def run(config, workdir: str | os.PathLike, initial: pathlib.Path | None = None) -> dict:
  """The whole job in `workdir`; `initial` (a checkpoint directory) skips the initial stage (a sweep's runs)."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  initial = initial or initial_stage(config, workdir)
  checkpoint, pruning = prune_stage(config, initial, workdir)
  model_config, params = read_config(checkpoint), load_tree(checkpoint)["params"]
  result = finetune_stage(config, config, params, model_config, list(config.data.classes), workdir / "finetune")
  final = result["model_config"]
  save_checkpoint(workdir / "final", result["params"], final, overwrite=True)

  original_depth = max(final.kept_blocks) if pruning is None else pruning["before"]["depth"]
  summary = {
      "initial_checkpoint": str(initial), "finetuned_checkpoint": str(workdir / "final"),
      "kept_blocks": list(final.kept_blocks),
      "removed_blocks": sorted(set(range(1, original_depth + 1)) - set(final.kept_blocks)),
      "pruning": None if pruning is None else {k: pruning[k] for k in ("chosen_by", "before", "after", "ranking")},
      "params": int(sum(np.size(x) for x in jax.tree.leaves(result["params"]))), "gflops": prune.gflops(final),
      "classes": result["classes"], "steps": result["steps"], "metrics": result["eval"],
      "throughput": {"train_clips_per_sec": result["train_clips_per_sec"],
                     "eval_clips_per_sec": result["eval"].get("clips_per_sec")},
  }
  (workdir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
  report.write_run_report(workdir, summary, result["history"])
  logging.info("WAR %.2f UAR %.2f top-5 %.2f → %s", summary["metrics"]["war"], summary["metrics"]["uar"],
               summary["metrics"]["top5"], workdir / "report.md")
  return summary
