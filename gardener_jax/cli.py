"""The `gardener` command line (also `python -m gardener_jax`).

  gardener rank CKPT [--criterion C] [--discretize D] [--json FILE] [--plot FILE.png]
  gardener prune CKPT (--criterion C (--ratio R | --remove K) | --blocks 10,11,12) --out DIR
      criteria that need data (block_influence, angular_distance) also take --calibration NAME
      --data_dir DIR [--data_config C] [--calibration_split train] [--calibration_clips 8] [--sampling_rate 4]
      [--seed S]: one clip of each of N videos drawn with the seed, sampled as for evaluation
  gardener evaluate CKPT (--dataset NAME --data_dir DIR | --video FILE ... | --config C) [--split test]
      [--num_clips N] [--num_crops M] [--sampling_rate R] [--framework flax|torch|both] [--json FILE]
  gardener data build NAME --data_dir DIR [--manual_dir M] [--config C]
  gardener data inspect NAME --data_dir DIR [--config C] [--sheet FILE.png]
  gardener train --config configs/demo.py --workdir DIR [--config.x=y ...]
  gardener pretrain --config configs/pretrain_demo.py --workdir DIR [--config.x=y ...]
  gardener sweep --config configs/sweep_demo.py --workdir DIR [--run_index I | --prepare | --collect]
  gardener convert SRC OUT [--variant vit_b] | --to-hf CKPT OUT | --to-original CKPT OUT.pth
  gardener compare-paper DIR
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from gardener_jax import criteria, prune, report
from gardener_jax.checkpoint import load_tree, read_config
from gardener_jax.data.video_io import VideoError
from gardener_jax.frameworks import FRAMEWORKS
from tools.convert_torch.errors import ConversionError


def _add_scoring_flags(parser):
  parser.add_argument("checkpoint", help="gardener_jax checkpoint directory")
  parser.add_argument("--criterion", choices=list(criteria.CRITERIA), default=None,
                      help="block-importance criterion (default entropy)")
  parser.add_argument("--discretize", default="exact",
                      help="value grid for entropy criteria: exact, float16, bfloat16 or hist:K (default exact)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the random criterion and of the calibration clips")
  parser.add_argument("--oracle", help="per-block accuracy JSON for the oracle criterion")
  data = parser.add_argument_group("calibration data (block_influence, angular_distance)")
  data.add_argument("--calibration", metavar="NAME", help="a prepared dataset (gardener data build), e.g. ucf101")
  data.add_argument("--data_dir", help="where prepared datasets live")
  data.add_argument("--data_config", help="the dataset's builder config, e.g. split_1")
  data.add_argument("--calibration_split", default="train", help="the split the clips come from (default train)")
  data.add_argument("--calibration_clips", type=int, default=8, help="clips, one per video (default 8)")
  data.add_argument("--sampling_rate", type=int, default=4, help="frames between a clip's frames (default 4)")


def _calibration(args, config):
  """The calibration clips when the criterion needs data; frames and size from the checkpoint's config."""
  from gardener_jax import calibration

  needs_data = args.criterion is not None and criteria.needs_data(args.criterion)
  if not needs_data:
    if args.calibration:
      raise ValueError(f"--calibration: criterion {args.criterion or 'entropy'!r} is data-free; calibration clips "
                       f"are read by {', '.join(n for n, c in criteria.CRITERIA.items() if c.needs_data)}")
    return None
  if not args.calibration or not args.data_dir:
    raise ValueError(f"criterion {args.criterion!r} scores blocks on calibration clips: give --calibration NAME "
                     "and --data_dir DIR (a dataset prepared with `gardener data build`)")
  return calibration.from_dataset(args.calibration, args.data_dir, config, data_config=args.data_config,
                                  split=args.calibration_split, num_clips=args.calibration_clips, seed=args.seed,
                                  sampling_rate=args.sampling_rate)


def cmd_rank(args) -> int:
  config, tree = read_config(args.checkpoint), load_tree(args.checkpoint)
  ranking = criteria.rank(tree["params"], config, args.criterion or "entropy", args.discretize, args.seed,
                          args.oracle, _calibration(args, config))
  print(report.describe(ranking))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(ranking.to_dict(), indent=2) + "\n")
  if args.plot:
    report.plot_scores(ranking, args.plot)
  return 0


def cmd_prune(args) -> int:
  blocks = None
  if args.blocks:
    try:
      blocks = [int(b) for b in args.blocks.split(",")]
    except ValueError:
      raise ValueError(f"--blocks {args.blocks!r}: expected comma-separated 1-based block ids, e.g. 10,11,12") from None
  if blocks and args.calibration:
    raise ValueError("--blocks names the blocks itself: drop --calibration")
  clips = None if blocks else _calibration(args, read_config(args.checkpoint))
  result, ranking = prune.prune_checkpoint(args.checkpoint, args.out, criterion=args.criterion, ratio=args.ratio,
                                           remove=args.remove, blocks=blocks, discretize=args.discretize,
                                           seed=args.seed, oracle=args.oracle, calibration=clips,
                                           overwrite=args.overwrite)
  print(f"removed blocks {result['removed_blocks']} ({result['chosen_by']}); kept {result['kept_blocks']}; "
        f"params {result['before']['params']:,} → {result['after']['params']:,}, GFLOPs "
        f"{result['before']['gflops']:.4g} → {result['after']['gflops']:.4g}; wrote {args.out}")
  if ranking is not None and (warning := report.distinct_warning(ranking)):
    print(f"warning: {warning}", file=sys.stderr)
  return 0


def _job_config(path: str):
  """A job config file's `get_config()` (`file.py:arg` passes the argument), as absl's --config reads it."""
  import importlib.util

  path, _, argument = path.partition(":")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"--config {path}: no such file")
  spec = importlib.util.spec_from_file_location("job_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def _evaluation_settings(args) -> dict:
  """The data and views of `gardener evaluate`: the flags, else the job config's `data`, else defaults."""
  data = _job_config(args.config).data if args.config else {}
  settings = dict(dataset=data.get("name"), data_dir=data.get("data_dir") or ("data" if data else None),
                  data_config=data.get("config") or None, split=data.get("eval_split") or "test",
                  sampling_rate=data.get("sampling_rate", 4), num_clips=data.get("num_clips", 1),
                  num_crops=data.get("num_crops", 1), batch_size=data.get("eval_batch_size", 8),
                  scaled_decode=data.get("scaled_decode", False))
  settings.update({k: v for k, v in vars(args).items() if k in settings and v is not None})
  return settings


def cmd_evaluate(args) -> int:
  from gardener_jax import files, frameworks
  from gardener_jax.data import input_pipeline, sources

  settings = _evaluation_settings(args)
  if not args.video and not (settings["dataset"] and settings["data_dir"]):
    raise ValueError("give --dataset NAME and --data_dir DIR (a dataset prepared with `gardener data build`), "
                     "--config (a job config whose data section names them), or --video FILE")
  chosen = list(frameworks.FRAMEWORKS) if args.framework == "both" else [args.framework]
  classifiers = frameworks.load_classifiers(args.checkpoint, chosen, args.fold_layer_scale)
  for warning in classifiers.warnings:
    print(f"warning: {warning}", file=sys.stderr)
  model = classifiers.config
  spec = input_pipeline.ClipSpec(model.num_frames, settings["sampling_rate"], model.image_size, settings["num_clips"],
                                 settings["num_crops"], augment=False, scaled_decode=settings["scaled_decode"])
  views = dict(num_clips=spec.num_clips, num_crops=spec.num_crops, num_frames=spec.num_frames,
               sampling_rate=spec.sampling_rate, image_size=spec.image_size)
  if args.video:
    result = frameworks.predict_videos(classifiers, args.video, spec)
    text = frameworks.videos_markdown(result)
  else:
    where = f"{settings['data_dir']}/{settings['dataset']} split {settings['split']!r}"
    source, info = sources.open_split(settings["data_dir"], settings["dataset"], settings["split"],
                                      settings["data_config"])
    source = frameworks.task_source(model, source, list(info.features["label"].names), where)
    result = frameworks.evaluate_split(classifiers, source, spec, settings["batch_size"])
    result.update(dataset=settings["dataset"], data_config=settings["data_config"], split=settings["split"])
    text = f"{args.checkpoint} on {where}, {spec.num_clips} clips × {spec.num_crops} crops per video\n\n" + \
        frameworks.split_markdown(result)
  result.update(checkpoint=str(args.checkpoint), views=views, versions=frameworks.versions())
  print(text)
  if args.json:
    files.write_json(args.json, result)
  return 0


def cmd_data_build(args) -> int:
  from gardener_jax.data import builders

  builder = builders.build(args.name, args.data_dir, args.config, args.manual_dir)
  splits = ", ".join(f"{name} {split.num_examples:,}" for name, split in builder.info.splits.items())
  print(f"built {args.name}/{builder.builder_config.name} in {builder.data_dir}: {splits} videos, "
        f"{builder.info.features['label'].num_classes} classes")
  return 0


def cmd_data_inspect(args) -> int:
  from gardener_jax.data import inspect
  from gardener_jax.data.input_pipeline import ClipSpec

  spec = ClipSpec(num_frames=args.num_frames, sampling_rate=args.sampling_rate, image_size=args.image_size)
  print(inspect.inspect(args.data_dir, args.name, args.config, spec, args.sheet))
  return 0


def cmd_compare_paper(args) -> int:
  from gardener_jax import compare

  text = compare.compare_paper(args.directory)
  (args.directory / "compare_paper.md").write_text(text)
  print(text)
  return 0


def _add_data_commands(commands) -> None:
  from gardener_jax.data.builders import BUILDERS

  data = commands.add_parser("data", help="build and inspect video datasets").add_subparsers(dest="data_command",
                                                                                            required=True)
  for verb, run, helptext in (("build", cmd_data_build, "prepare a dataset as array_record files"),
                              ("inspect", cmd_data_inspect, "print what the model is fed and draw a contact sheet")):
    parser = data.add_parser(verb, help=helptext)
    parser.add_argument("name", choices=list(BUILDERS))
    parser.add_argument("--data_dir", required=True, help="where prepared datasets live")
    parser.add_argument("--config", help="builder config, e.g. split_1, gardener_70_10, tiny")
    parser.set_defaults(run=run)
    if verb == "build":
      parser.add_argument("--manual_dir", help="the extracted archives and split lists (real datasets)")
    else:
      parser.add_argument("--sheet", help="write a PNG contact sheet of sampled clips")
      parser.add_argument("--num_frames", type=int, default=16)
      parser.add_argument("--sampling_rate", type=int, default=4)
      parser.add_argument("--image_size", type=int, default=224)


def _add_evaluate_command(commands) -> None:
  evaluate = commands.add_parser("evaluate", help="evaluate a classifier checkpoint in Flax, PyTorch or both on "
                                                  "the same views")
  evaluate.add_argument("checkpoint", help="gardener_jax checkpoint directory (full or pruned)")
  evaluate.add_argument("--config", help="a job config whose data section gives the dataset and the views")
  evaluate.add_argument("--dataset", help="a prepared dataset (gardener data build), e.g. ucf101")
  evaluate.add_argument("--data_dir", help="where prepared datasets live")
  evaluate.add_argument("--data_config", help="the dataset's builder config, e.g. split_1")
  evaluate.add_argument("--split", help="the split to evaluate (default: the config's eval_split, else test)")
  evaluate.add_argument("--video", nargs="+", help="video files to classify instead of a dataset split")
  evaluate.add_argument("--num_clips", type=int, help="clips per video, evenly spaced (default 1)")
  evaluate.add_argument("--num_crops", type=int, choices=(1, 3), help="crops per clip (default 1)")
  evaluate.add_argument("--sampling_rate", type=int, help="frames between a clip's frames (default 4)")
  evaluate.add_argument("--batch_size", type=int, help="videos per batch (default 8)")
  evaluate.add_argument("--framework", choices=(*FRAMEWORKS, "both"), default="flax",
                        help="flax, torch (the HuggingFace export in transformers) or both (default flax)")
  evaluate.add_argument("--fold_layer_scale", action="store_true",
                        help="torch: multiply layer scale into attn.proj and mlp.fc2 (HuggingFace has none)")
  evaluate.add_argument("--json", help="write the results as JSON")
  evaluate.set_defaults(run=cmd_evaluate)


JOB_VERBS = {  # commands whose flags are absl's (a config file and --config.x=y overrides) or the converter's
    "train": "score, prune, finetune and report, from a config (--config, --workdir, --config.x=y)",
    "pretrain": "masked video pretraining from a config (--config, --workdir, --config.x=y)",
    "sweep": "criteria × pruning levels and the oracle, from one config (--config, --workdir, --run_index, "
             "--prepare, --collect)",
    "convert": "PyTorch VideoMAE (HuggingFace, original release) ⇄ gardener_jax checkpoints, bit-exact",
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="gardener", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  rank = commands.add_parser("rank", help="score every block and print the removal order")
  _add_scoring_flags(rank)
  rank.add_argument("--json", help="write the ranking as JSON")
  rank.add_argument("--plot", help="write a bar plot of the scores (PNG)")
  rank.set_defaults(run=cmd_rank)

  prune_cmd = commands.add_parser("prune", help="remove blocks and write the smaller checkpoint")
  _add_scoring_flags(prune_cmd)
  prune_cmd.add_argument("--ratio", type=float, help="fraction of the blocks to remove (k = round(ratio · depth))")
  prune_cmd.add_argument("--remove", type=int, help="number of blocks to remove")
  prune_cmd.add_argument("--blocks", help="explicit comma-separated 1-based block ids to remove, e.g. 10,11,12")
  prune_cmd.add_argument("--out", required=True, help="output checkpoint directory")
  prune_cmd.add_argument("--overwrite", action="store_true")
  prune_cmd.set_defaults(run=cmd_prune)
  _add_evaluate_command(commands)
  _add_data_commands(commands)
  for verb, helptext in JOB_VERBS.items():
    commands.add_parser(verb, add_help=False, help=helptext)
  compare = commands.add_parser("compare-paper", help="a sweep's table next to the paper's numbers")
  compare.add_argument("directory", type=pathlib.Path, help="the sweep directory (with sweep.csv)")
  compare.set_defaults(run=cmd_compare_paper)

  argv = sys.argv[1:] if argv is None else list(argv)
  if argv[:1] == ["sweep"]:  # config files and --config.x=y overrides are absl's
    from gardener_jax import sweep_main

    return sweep_main.run(["gardener sweep", *argv[1:]])
  if argv[:1] in (["train"], ["pretrain"]):
    from gardener_jax import main as job

    return job.run([f"gardener {argv[0]}", *argv[1:]], verb=argv[0])
  if argv[:1] == ["convert"]:
    from tools.convert_torch.__main__ import main as convert_main

    return convert_main(argv[1:], prog="gardener convert")
  args = parser.parse_args(argv)
  try:
    return args.run(args)
  except (ValueError, FileNotFoundError, FileExistsError, ConversionError, VideoError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
