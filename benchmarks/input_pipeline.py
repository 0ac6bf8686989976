"""Clips per second at 16 × 224² (sampling rate 4), in one run:

1. train clips: the grain pipeline over the JPEG-per-frame array_record dataset against a plain loader
   that decodes every frame of the source video with PyAV, on the same videos, with the same number of
   worker processes and the same batching;
2. the CPU time a clip costs (the pipeline in this process, all its threads), train and eval, and so
   how many cores keep an accelerator busy at a given step rate (--step_clips_per_sec);
3. frames stored at twice the resolution (640 × 480): `data.scaled_decode` (reduced-scale JPEG decode)
   against decoding the whole frame, in CPU time per clip.

  python benchmarks/input_pipeline.py [--videos 24] [--frames 180] [--workers 2] [--step_clips_per_sec 275]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import grain  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import Rate, batch_rate, machine, print_table  # noqa: E402
from gardener_jax.data import builders, input_pipeline, sampling, sources, synthetic, video_io  # noqa: E402
from gardener_jax.data.input_pipeline import ClipSpec  # noqa: E402


def make_videos(root: pathlib.Path, count: int, frames: int, height: int = 240) -> list[pathlib.Path]:
  """UCF101-like sources: height × 4/3 height (320 × 240 by default) MPEG-4, in a video_folder tree."""
  paths = []
  for i in range(count):
    name = synthetic.CLASSES[i % len(synthetic.CLASSES)]
    clip = synthetic.render(name, height, frames, seed=i)
    clip = np.concatenate([clip, clip[:, :, :height // 3]], axis=2)
    (root / name).mkdir(parents=True, exist_ok=True)
    video_io.write_video(root / name / f"{i:03d}.mp4", clip)
    paths.append(root / name / f"{i:03d}.mp4")
  return paths


def pyav_clip(path, rng: np.random.Generator, spec: ClipSpec) -> dict:
  """Decode every frame with PyAV, then sample and crop like the pipeline does."""
  frames, _ = video_io.read_video(path)
  index = sampling.train_indices(len(frames), spec.num_frames, spec.sampling_rate, rng)
  top, left, h, w = sampling.random_resized_crop_box(*frames.shape[1:3], rng)
  clip = video_io.resize(frames[index, top:top + h, left:left + w], spec.image_size, spec.image_size)
  return {"clips": clip, "label": np.int32(0)}  # uint8, as the pipeline's


def plain_loader(paths, spec: ClipSpec, batch: int, workers: int) -> grain.IterDataset:
  """The PyAV loader in the same grain stream as the pipeline: shuffled, `workers` processes, batched."""
  dataset = grain.MapDataset.source([str(p) for p in paths]).shuffle(seed=0).repeat(None)
  dataset = dataset.random_map(functools.partial(pyav_clip, spec=spec), seed=0)
  return input_pipeline.stream(dataset, workers).batch(batch, drop_remainder=True)


def large_frame_examples(count: int, frames: int, height: int = 480) -> list[dict]:
  """Examples as the builder stores them, with frames kept at height × 4/3 height (a builder with a
  larger max_short_side), in memory."""
  examples = []
  for i in range(count):
    clip = synthetic.render(synthetic.CLASSES[i % len(synthetic.CLASSES)], height, frames, seed=i)
    clip = np.concatenate([clip, clip[:, :, :height // 3]], axis=2)
    examples.append({"frames": video_io.encode_jpeg(clip), "num_frames": frames, "label": 0,
                     "video_id": f"{i:03d}".encode()})
  return examples


def in_process_rates(source, spec: ClipSpec, eval_spec: ClipSpec, batch: int, timed: int) -> dict[str, Rate]:
  """Train and eval (one view per video) rates of the pipeline in this process over `timed` batches
  after a first one (no worker processes; grain's reading threads and the decoders use more than one
  core). Eval reads the videos over again as often as the batches need."""
  examples = [source[i] for i in range(len(source))]
  train = input_pipeline.train_pipeline(examples, spec, batch, seed=0)
  evaluation = input_pipeline.eval_pipeline(examples * math.ceil((timed + 1) * batch / len(examples)), eval_spec,
                                            batch)
  return {"train": batch_rate(train, timed), "eval": batch_rate(evaluation, timed)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--videos", type=int, default=24)
  parser.add_argument("--frames", type=int, default=180)  # UCF101 videos average 7.2 s at 25 fps
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--step_clips_per_sec", type=float, nargs="*", default=[275.0],
                      help="accelerator step rates to size the input for (default: 275, the ViT-B bf16 finetuning "
                           "step at batch 32 measured on one H200 in an earlier session)")
  args = parser.parse_args()
  spec = ClipSpec(num_frames=16, sampling_rate=4, image_size=224)
  eval_spec = ClipSpec(num_frames=16, sampling_rate=4, image_size=224, augment=False)
  timed = 2 * args.videos // args.batch  # batches after the first, which starts the workers
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    paths = make_videos(root / "videos", args.videos, args.frames)
    start = time.perf_counter()
    builders.build("video_folder", root / "data", manual_dir=root / "videos")
    build_seconds = time.perf_counter() - start
    source, _ = sources.open_split(root / "data", "video_folder", "train")
    plain_rate = batch_rate(iter(plain_loader(paths, spec, args.batch, args.workers)), timed).clips_per_sec
    ours = input_pipeline.train_pipeline(source, spec, args.batch, seed=0, num_workers=args.workers)
    ours_rate = batch_rate(iter(ours), timed).clips_per_sec
    in_process = in_process_rates(source, spec, eval_spec, args.batch, timed)
  large = large_frame_examples(args.videos, min(args.frames, 96))
  whole = in_process_rates(large, spec, eval_spec, args.batch, timed)
  reduced = in_process_rates(large, *(dataclasses.replace(s, scaled_decode=True) for s in (spec, eval_spec)),
                             args.batch, timed)

  print_table(f"Train clips / s, 16 × 224², batch {args.batch}, {args.workers} worker processes on both sides, "
              f"{args.videos} videos of {args.frames} frames at 320 × 240 (dataset built once in {build_seconds:.1f} "
              f"s); {machine()}", ["loader", "clips / s", "ratio"],
              [["PyAV, decode every frame of the source video", plain_rate, 1.0],
               ["grain over array_record JPEG frames", ours_rate, ours_rate / plain_rate]])
  print_table(f"CPU time per clip: the pipeline in this process (no worker processes), user + system time of "
              f"all its threads, 320 × 240 frames, 16 × 224² clips; {args.workers} workers gave {ours_rate:.1f} train "
              "clips / s above", ["clips", "clips / s", "clips / CPU s (one core)"]
              + [f"cores for a {step:g} clips / s step" for step in args.step_clips_per_sec],
              [[name, r.clips_per_sec, r.clips_per_cpu_sec]
               + [f"{step / r.clips_per_cpu_sec:.1f}" for step in args.step_clips_per_sec]
               for name, r in in_process.items()])
  print_table("Frames stored at 640 × 480, 16 × 224² clips, in this process: `data.scaled_decode` (reduced-scale "
              "JPEG decode) against decoding every frame whole (the default)", ["clips", "whole frames, clips / CPU s",
                                                                 "reduced scale, clips / CPU s", "speed-up"],
              [[name, whole[name].clips_per_cpu_sec, reduced[name].clips_per_cpu_sec,
                reduced[name].clips_per_cpu_sec / whole[name].clips_per_cpu_sec] for name in ("train", "eval")])


if __name__ == "__main__":
  main()
