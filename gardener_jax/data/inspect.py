"""What the model is fed: split sizes, classes, one batch's shapes and value range, a contact sheet."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from gardener_jax.data import input_pipeline, sources


def contact_sheet(clips: np.ndarray, labels, names, path, max_frames: int = 8) -> None:
  """Rows of clips ((B, T, H, W, 3) uint8) as images: up to `max_frames` frames each."""
  step = max(1, clips.shape[1] // max_frames)
  rows = [np.concatenate(list(clip[::step][:max_frames]), axis=1) for clip in clips]
  sheet = np.concatenate(rows, axis=0)
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(sheet).save(path)
  pathlib.Path(path).with_suffix(".txt").write_text(
      "\n".join(f"row {i}: {names[int(label)]}" for i, label in enumerate(labels)) + "\n")


def inspect(data_dir, name: str, config: str | None, spec: input_pipeline.ClipSpec, sheet: str | None,
            batch_size: int = 8) -> str:
  lines = []
  source, info = None, None
  for split in ("train", "test", "validation"):
    try:
      source_split, info = sources.open_split(data_dir, name, split, config)
    except ValueError:
      continue
    lines.append(f"{split}: {len(source_split):,} videos")
    source = source if source is not None else source_split
  names = info.features["label"].names
  lines.append(f"{len(names)} classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
  batch = next(iter(input_pipeline.train_pipeline(source, spec, batch_size=min(batch_size, len(source)), seed=0)))
  clips = batch["clips"]
  lines.append(f"one train batch: clips {clips.shape} {clips.dtype}, values [{clips.min()}, {clips.max()}] "
               f"(RGB; the step normalises them), labels {batch['label'].tolist()}")
  if sheet:
    contact_sheet(clips, batch["label"], names, sheet)
    lines.append(f"contact sheet: {sheet} (rows listed in {pathlib.Path(sheet).with_suffix('.txt')})")
  return "\n".join(lines)
