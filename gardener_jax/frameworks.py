"""One checkpoint, the same views, two frameworks: Flax, and PyTorch through the HuggingFace export.

`gardener evaluate` reads each batch of views once and feeds it to every framework asked for, so a
difference between their numbers can only come from the frameworks, never from the data. Both
frameworks run in float32 (a float16/bfloat16 checkpoint is cast up exactly); each video's prediction
is the mean softmax over its clip × crop views, as the training loop's evaluator computes it.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable, Sequence

import jax
import numpy as np
from scipy import special

from gardener_jax.checkpoint import cast_floats, load_tree, read_config
from gardener_jax.data import input_pipeline, sampling, video_io
from gardener_jax.evaluate import video_metrics
from gardener_jax.models import ModelConfig, VideoMAE

FRAMEWORKS = ("flax", "torch")
Classify = Callable[[np.ndarray], np.ndarray]  # (clips, T, S, S, 3) normalised float32 → (clips, classes) logits


def versions() -> dict[str, str]:
  """The software a result was computed with, for the reports that set frameworks side by side."""
  import flax

  return {"jax": jax.__version__, "flax": flax.__version__, "backend": jax.default_backend()}


def cpu_model() -> str:
  """The CPU's model name, for tables whose ratios depend on it (SPEC §9)."""
  import platform

  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return platform.processor() or platform.machine()
  return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def flax_classifier(params, config: ModelConfig) -> Classify:
  model = VideoMAE(config)
  apply = jax.jit(lambda params, clips: model.apply({"params": params}, clips))
  params = jax.device_put(cast_floats(params, np.float32))

  def classify(clips: np.ndarray) -> np.ndarray:
    with jax.default_matmul_precision("highest"):  # float32 as PyTorch computes it (no TF32 on GPUs)
      return np.asarray(apply(params, clips), np.float32)
  return classify


def torch_classifier(params, config: ModelConfig, name: str, fold_layer_scale: bool) -> tuple[Classify, list[str]]:
  """The transformers VideoMAE that `gardener convert --to-hf` writes, built in memory; its warnings."""
  import torch

  from tools.convert_torch.convert import torch_model

  model, warnings = torch_model(params, config, name=name, fold_layer_scale=fold_layer_scale)

  def classify(clips: np.ndarray) -> np.ndarray:
    with torch.inference_mode():  # transformers reads (clips, T, C, H, W)
      return model(torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 1, 4, 2, 3)))).logits.numpy()
  return classify, warnings


@dataclasses.dataclass
class Classifiers:
  """A classifier checkpoint's config and, per framework asked for, its forward pass."""

  checkpoint: str
  config: ModelConfig
  by_framework: dict[str, Classify]
  warnings: list[str]


def load_classifiers(checkpoint, frameworks: Sequence[str], fold_layer_scale: bool = False) -> Classifiers:
  if unknown := [f for f in frameworks if f not in FRAMEWORKS]:
    raise ValueError(f"framework {unknown[0]!r}: expected one of {', '.join(FRAMEWORKS)} (or both)")
  config = read_config(checkpoint)
  if config.is_pretraining or not config.num_classes:
    what = "a pretraining checkpoint" if config.is_pretraining else "a model without a head"
    raise ValueError(f"{checkpoint}: {what}; evaluation needs a classifier (finetune it first, e.g. `gardener train`)")
  params = load_tree(checkpoint)["params"]
  by_framework, warnings = {}, []
  for framework in frameworks:
    if framework == "flax":
      by_framework[framework] = flax_classifier(params, config)
    else:
      by_framework[framework], warnings = torch_classifier(params, config, str(checkpoint), fold_layer_scale)
  return Classifiers(str(checkpoint), config, by_framework, warnings)


def view_logits(classify: Classify, clips: np.ndarray) -> np.ndarray:
  """(videos, views, T, S, S, 3) uint8 → (videos, views, classes); normalised once, on the host, for
  every framework alike."""
  videos, views = clips.shape[:2]
  logits = classify(sampling.normalize(clips.reshape(videos * views, *clips.shape[2:])))
  return logits.reshape(videos, views, logits.shape[-1])


def video_probabilities(logits: np.ndarray) -> np.ndarray:
  """(videos, views, classes) logits → each video's softmax averaged over its views."""
  return special.softmax(logits.astype(np.float64), axis=-1).mean(axis=1)


def class_names(config: ModelConfig) -> list[str]:
  return list(config.class_names or [f"class {i}" for i in range(config.num_classes)])


def task_source(config: ModelConfig, source, dataset_names: list[str], where: str):
  """The videos of `source` relabelled as the checkpoint's head reads them: by its class names, or (a
  checkpoint that does not know them) as the dataset numbers its classes."""
  from gardener_jax.data import sources

  if config.class_names:
    missing = [c for c in config.class_names if c not in dataset_names]
    if missing:
      raise ValueError(f"{where}: lacks the checkpoint's classes {missing[:5]}; it has {dataset_names[:10]}…")
    return sources.class_subset(source, dataset_names, config.class_names)
  if config.num_classes != len(dataset_names):
    raise ValueError(f"{where}: {len(dataset_names)} classes, but the checkpoint's head has {config.num_classes} "
                     "outputs and no class names to match them by")
  return source


def compare(logits: dict[str, np.ndarray]) -> dict:
  """Agreement (% of videos on which both frameworks predict the same class) and the largest logit difference."""
  flax_logits, torch_logits = logits["flax"], logits["torch"]
  same = np.argmax(video_probabilities(flax_logits), -1) == np.argmax(video_probabilities(torch_logits), -1)
  return {"agreement": 100 * int(same.sum()) / len(same),
          "max_logit_diff": float(np.max(np.abs(flax_logits.astype(np.float64) - torch_logits)))}


def evaluate_split(classifiers: Classifiers, source, spec: input_pipeline.ClipSpec, batch_size: int = 8) -> dict:
  """Every framework's WAR, UAR, top-1 and top-5 over the videos of `source`, read once."""
  from tqdm import tqdm

  logits = {name: [] for name in classifiers.by_framework}
  labels = []
  batches = input_pipeline.eval_pipeline(source, spec, batch_size)
  for batch in tqdm(batches, total=math.ceil(len(source) / batch_size), desc="evaluate", unit="batch",
                    mininterval=2, leave=False):
    valid = batch["valid"]
    if not valid.any():  # a batch of videos none of which could be decoded
      continue
    labels.append(batch["label"][valid])
    for name, classify in classifiers.by_framework.items():
      logits[name].append(view_logits(classify, batch["clips"][valid]))
  labels = np.concatenate(labels)
  if not len(labels):
    raise ValueError(f"none of the {len(source)} videos could be decoded")
  logits = {name: np.concatenate(chunks) for name, chunks in logits.items()}
  num_classes = classifiers.config.num_classes
  result = {name: video_metrics(video_probabilities(values), labels, num_classes) for name, values in logits.items()}
  result.update(videos=len(labels), skipped=len(source) - len(labels))
  if len(logits) == 2:
    result.update(compare(logits))
  return result


def predict_videos(classifiers: Classifiers, paths: Sequence, spec: input_pipeline.ClipSpec, top_k: int = 5) -> dict:
  """Each video file's top-k classes and probabilities in every framework."""
  names = class_names(classifiers.config)
  out = []
  for path in paths:
    frames, _ = video_io.read_video(path)
    clips = input_pipeline.video_views(frames, spec)[None]
    logits = {name: view_logits(classify, clips) for name, classify in classifiers.by_framework.items()}
    entry = {"path": str(path), "frames": len(frames)}
    for name, values in logits.items():
      probabilities = video_probabilities(values)[0]
      entry[name] = [{"label": names[i], "score": float(probabilities[i])}
                     for i in np.argsort(-probabilities, kind="stable")[:top_k]]
    if len(logits) == 2:
      entry.update(compare(logits))
    out.append(entry)
  return {"videos": out}


def split_markdown(result: dict) -> str:
  frameworks = [f for f in FRAMEWORKS if f in result]
  rows = [f"| {f} | {result[f]['videos']} | {result[f]['war']:.2f} | {result[f]['uar']:.2f} | {result[f]['top1']:.2f} "
          f"| {result[f]['top5']:.2f} |" for f in frameworks]
  lines = ["| framework | videos | WAR | UAR | top-1 | top-5 |", "|---|---|---|---|---|---|", *rows]
  if "agreement" in result:
    lines += ["", f"Both predict the same class for {result['agreement']:.2f} % of the videos; the largest logit "
                  f"difference is {result['max_logit_diff']:.2e}."]
  if result.get("skipped"):
    lines += ["", f"{result['skipped']} videos could not be decoded and are not counted."]
  return "\n".join(lines)


def videos_markdown(result: dict) -> str:
  lines = []
  for video in result["videos"]:
    lines += [f"{pathlib.Path(video['path']).name} ({video['frames']} frames)", ""]
    frameworks = [f for f in FRAMEWORKS if f in video]
    lines += ["| rank | " + " | ".join(frameworks) + " |", "|---|" + "---|" * len(frameworks)]
    lines += [f"| {rank + 1} | " + " | ".join(f"{video[f][rank]['label']} {video[f][rank]['score']:.4f}"
                                              for f in frameworks) + " |" for rank in range(len(video[frameworks[0]]))]
    if "agreement" in video:
      lines += ["", f"largest logit difference {video['max_logit_diff']:.2e}"]
    lines.append("")
  return "\n".join(lines).rstrip()
