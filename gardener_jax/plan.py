"""The dry run (`--dry_run`): what a job or sweep would do, read from its config, the workdir and the
source checkpoint's config.json, without reading a video or a weight, and without writing anything."""

from __future__ import annotations

import json
import pathlib

import jax

from gardener_jax import criteria, prune, validate
from gardener_jax.checkpoint import CONFIG_FILE, count_params
from gardener_jax.models import VARIANTS, ModelConfig, init_params


def source_model(config) -> tuple[ModelConfig | None, str]:
  """The source model's architecture and where it comes from (None where only conversion can tell)."""
  source = str(config.init.source)
  classes = len(config.pretrain.classes) if source == "pretrain" else config.model.get("num_classes", 0)
  if source in ("pretrain", "random_hf"):
    masked = source == "pretrain" and config.pretrain.get("masked")
    how = ("a random transformers VideoMAE, converted" if source == "random_hf"
           else f"made here: {'masked pretraining, then ' if masked else ''}supervised training")
    return ModelConfig.from_job(config.model, config.data, num_classes=classes), how
  config_file = pathlib.Path(source).expanduser() / CONFIG_FILE
  if config_file.is_file():
    stored = json.loads(config_file.read_text())
    if "depth" in stored:
      return ModelConfig.from_dict(stored), f"{source} (a gardener_jax checkpoint)"
    from tools.convert_torch.infer import from_hf_config

    facts = from_hf_config(stored, source)
    try:
      return ModelConfig(**facts, num_classes=len(stored.get("id2label", {}))), f"{source} (HuggingFace, converted)"
    except TypeError:
      pass
  if config.init.get("variant") in VARIANTS:
    return (ModelConfig(**VARIANTS[config.init.variant], num_frames=16, image_size=224),
            f"{source} (converted; sizes of --variant {config.init.variant})")
  return None, f"{source} (converted; sizes known once converted)"


def _model_line(model: ModelConfig) -> str:
  params = count_params(jax.eval_shape(lambda: init_params(model)))
  return (f"depth {model.depth}, width {model.width}, {model.num_heads} heads, MLP {model.mlp_dim}, "
          f"{model.num_frames} × {model.image_size}² clips ({model.num_tokens} tokens), {params:,} params, "
          f"{prune.gflops(model):.4g} GFLOPs per clip")


def _prepared_splits(config) -> tuple[pathlib.Path, dict[str, int]] | None:
  """The current prepared version of the job's dataset and its split sizes (from dataset_info.json)."""
  from gardener_jax.data import sources

  data = config.data
  found = sources.prepared(pathlib.Path(data.data_dir or "data"), data.name, data.config or None)
  if not found:
    return None
  info = json.loads((found[-1] / "dataset_info.json").read_text())
  return found[-1], {s["name"]: sum(int(n) for n in s.get("shardLengths", [0])) for s in info["splits"]}


def _data_lines(config) -> list[str]:
  data = config.data
  name = f"{data.name}/{data.config or 'default'}"
  if (prepared := _prepared_splits(config)) is None:
    return [f"data: {name}, not prepared in {data.data_dir or 'data'}: built first"
            + (f" from {data.manual_dir}" if data.manual_dir else "")]
  version, sizes = prepared
  splits = ", ".join(f"{split} {count:,}" for split, count in sizes.items())
  classes = f"{len(data.classes)} classes of the dataset" if data.classes else "every class"
  return [f"data: {name} in {version}: {splits} videos; this job uses {classes}"]


def _train_videos(config, classes) -> int | None:
  """Training videos after the validation hold-out, when the prepared split's size gives them (all classes)."""
  data = config.data
  prepared = _prepared_splits(config)
  all_classes = validate.dataset_classes(data.name, data.config or None, pathlib.Path(data.data_dir or "data"))
  if prepared is None or (classes and set(classes) != set(all_classes or ())):
    return None
  videos = prepared[1][data.train_split]
  held_out = max(1, round(data.val_fraction * videos)) if data.get("val_fraction") and not data.get("val_split") else 0
  return videos - held_out


def _training_line(section, devices: int, videos: int | None = None) -> str:
  t = section.train
  steps = (f"{max(1, videos // t.batch_size) * t.epochs:,} steps ({videos:,} videos)" if videos
           else "steps counted when the split is opened (a class subset)")
  return (f"{t.epochs} epochs, {steps}, global batch {t.batch_size} ({t.batch_size // devices} per device), "
          f"{t.get('dtype', 'float32')}, lr {section.optim.lr}")


def _removed(config, depth: int) -> tuple[int, str]:
  p = config.prune
  if p.criterion == "none":
    return 0, "none: the source model is finetuned whole"
  if p.blocks:
    blocks = [int(b) for b in str(p.blocks).split(",") if b.strip()]
    return len(blocks), f"blocks {blocks}"
  k = prune.num_to_remove(p.ratio, depth) if p.ratio else int(p.remove)
  data = (f", on {p.get('calibration_clips', 8)} clips of the training split"
          if criteria.needs_data(p.criterion) else ", data-free")
  grid = f" ({p.discretize})" if p.criterion in ("entropy", "mutual_information") else ""
  return k, f"{k} of {depth} blocks by {p.criterion}{grid}{data}"


def _done(path: pathlib.Path) -> str:
  return "done" if path.exists() else "to run"


def job(config, workdir) -> str:
  """The plan of `gardener train`."""
  workdir, devices = pathlib.Path(workdir), jax.device_count()
  model, origin = source_model(config)
  lines = [f"dry run of {workdir}: nothing is read or written",
           f"devices: {devices} × {jax.devices()[0].platform} on {jax.process_count()} process(es)",
           *_data_lines(config), f"source model: {origin}"]
  if model is not None:
    lines.append(f"  {_model_line(model)}")
  stages = []
  if config.init.source == "pretrain":
    source_videos = _train_videos(config, config.pretrain.classes)
    if config.pretrain.get("masked"):
      stages.append((workdir / "masked_pretraining" / "report.json",
                     f"masked pretraining on {len(config.pretrain.classes)} classes: "
                     f"{_training_line(config.pretrain.masked, devices, source_videos)}"))
    stages.append((workdir / "pretrained" / CONFIG_FILE,
                   f"supervised training on {len(config.pretrain.classes)} classes: "
                   f"{_training_line(config.pretrain, devices, source_videos)}; saved as "
                   f"{config.pretrain.get('save_dtype') or 'float32'}"))
  elif not (pathlib.Path(str(config.init.source)).expanduser() / "params").is_dir():
    stages.append((workdir / "checkpoint" / CONFIG_FILE, "conversion to a gardener_jax checkpoint"))
  if model is not None:
    k, how = _removed(config, model.depth)
    stages.append((workdir / "pruned" / CONFIG_FILE, f"prune: {how}"))
    pruned = model.replace(depth=model.depth - k, num_classes=len(config.data.classes) or model.num_classes,
                           class_names=None)
    finetune = _training_line(config, devices, _train_videos(config, config.data.classes))
    stages.append((workdir / "report.json", f"finetune: {finetune}; the pruned model: {_model_line(pruned)}"))
  else:
    stages.append((workdir / "report.json", f"prune ({config.prune.criterion}), then finetune: "
                   f"{_training_line(config, devices)}"))
  lines += [f"{i}. [{_done(path)}] {text}" for i, (path, text) in enumerate(stages, 1)]
  lines.append(f"writes: {workdir}/ pruned/, finetune/ (checkpoints/, best/), final/, report.json, report.md, "
               "curves.png")
  return "\n".join(lines)


def pretraining(config, workdir) -> str:
  """The plan of `gardener pretrain`."""
  workdir, devices = pathlib.Path(workdir), jax.device_count()
  model = ModelConfig.from_job(config.model, config.data)
  return "\n".join([
      f"dry run of {workdir}: nothing is read or written",
      f"devices: {devices} × {jax.devices()[0].platform} on {jax.process_count()} process(es)", *_data_lines(config),
      f"encoder: {_model_line(model)}", f"decoder: width {config.mae.decoder.width}, depth {config.mae.decoder.depth}; "
      f"mask ratio {config.mae.mask_ratio}",
      f"1. [{_done(workdir / 'report.json')}] masked pretraining: "
      f"{_training_line(config, devices, _train_videos(config, config.data.classes))}",
      f"writes: {workdir}/ train/ (checkpoints/, best/), pretrained/, report.json, report.md, curves.png, "
      "reconstructions.png"])


def sweep(config, workdir) -> str:
  """The plan of `gardener sweep`: the runs, and how many reuse an earlier training (known once the
  initial checkpoint is scored: after `--prepare`)."""
  from gardener_jax import sweep as sweep_lib

  workdir = pathlib.Path(workdir)
  model, origin = source_model(config)
  blocks = model.kept_blocks if model else validate.source_blocks(config)
  runs = sweep_lib.plan(config.sweep, blocks, sweep_lib.training_seeds(config))
  lines = [f"dry run of sweep {workdir}: nothing is read or written", f"initial model: {origin}",
           f"{len(runs)} runs: " + ", ".join(f"{sum(r.criterion == c for r in runs)} {c}"
                                               for c in dict.fromkeys(r.criterion for r in runs))]
  plan_file = workdir / "plan.json"
  if plan_file.is_file() and (workdir / sweep_lib.RANKINGS_FILE).is_file():
    try:
      prepared = sweep_lib.open_sweep(config, workdir)
    except ValueError as e:  # prepared for another config
      return "\n".join([*lines, str(e)])
    keys = {}
    for run in prepared.runs:
      try:  # the oracle's sets are read from oracle.json; where the sweep has not written it yet, they count as new
        if run.criterion == sweep_lib.ORACLE and not (workdir / "oracle.json").is_file():
          raise sweep_lib.Pending(run.name)
        keys.setdefault(json.dumps(prepared.training_key(run, prepared.removal_order(run))), []).append(run.name)
      except sweep_lib.Pending:
        keys.setdefault(run.name, []).append(run.name)
    finished = sum(prepared.result(r) is not None and prepared.result(r).get("status") == "ok" for r in prepared.runs)
    lines.append(f"{len(keys)} trainings, {len(runs) - len(keys)} runs reuse an equal one (oracle top-k sets counted "
                 f"as new until the single-block runs finish); {finished} runs already finished")
  else:
    lines.append("trainings and reuses: known once the initial checkpoint is scored (`gardener sweep ... --prepare`)")
  return "\n".join(lines)
