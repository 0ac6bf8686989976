"""Train clips per second at 16 × 224² (sampling rate 4): the grain pipeline over the JPEG-per-frame
array_record dataset against a plain loader that decodes every frame of the source video with PyAV,
on the same videos, with the same number of worker processes and the same batching, in one run.

  python benchmarks/input_pipeline.py [--videos 24] [--frames 180] [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import grain  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import machine, print_table  # noqa: E402
from gardener_jax.data import builders, input_pipeline, sampling, sources, synthetic, video_io  # noqa: E402
from gardener_jax.data.input_pipeline import ClipSpec  # noqa: E402


def make_videos(root: pathlib.Path, count: int, frames: int) -> list[pathlib.Path]:
  """UCF101-like sources: 320 × 240 MPEG-4, in a video_folder tree."""
  paths = []
  for i in range(count):
    name = synthetic.CLASSES[i % len(synthetic.CLASSES)]
    clip = synthetic.render(name, 240, frames, seed=i)
    clip = np.concatenate([clip, clip[:, :, :80]], axis=2)  # 240 × 320
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
  return {"clips": sampling.normalize(clip), "label": np.int32(0)}


def plain_loader(paths, spec: ClipSpec, batch: int, workers: int) -> grain.IterDataset:
  """The PyAV loader in the same grain stream as the pipeline: shuffled, `workers` processes, batched."""
  dataset = grain.MapDataset.source([str(p) for p in paths]).shuffle(seed=0).repeat(None)
  dataset = dataset.random_map(functools.partial(pyav_clip, spec=spec), seed=0)
  return input_pipeline.stream(dataset, workers).batch(batch, drop_remainder=True)


def clips_per_second(iterator, clips: int) -> float:
  """Clips per second over `clips` clips, after a first batch that starts the workers."""
  next(iterator)
  start, seen = time.perf_counter(), 0
  while seen < clips:
    seen += len(next(iterator)["label"])
  return seen / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--videos", type=int, default=24)
  parser.add_argument("--frames", type=int, default=180)  # UCF101 videos average 7.2 s at 25 fps
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--batch", type=int, default=4)
  args = parser.parse_args()
  spec = ClipSpec(num_frames=16, sampling_rate=4, image_size=224)
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    paths = make_videos(root / "videos", args.videos, args.frames)
    start = time.perf_counter()
    builders.build("video_folder", root / "data", manual_dir=root / "videos")
    build_seconds = time.perf_counter() - start
    source, _ = sources.open_split(root / "data", "video_folder", "train")
    plain_rate = clips_per_second(iter(plain_loader(paths, spec, args.batch, args.workers)), 2 * args.videos)
    ours = input_pipeline.train_pipeline(source, spec, args.batch, seed=0, num_workers=args.workers)
    ours_rate = clips_per_second(iter(ours), 2 * args.videos)
  print_table(f"Train clips / s, 16 × 224², batch {args.batch}, {args.workers} worker processes on both sides, "
              f"{args.videos} videos of {args.frames} frames at 320 × 240 (dataset built once in {build_seconds:.1f} "
              f"s); {machine()}", ["loader", "clips / s", "ratio"],
              [["PyAV, decode every frame of the source video", plain_rate, 1.0],
               ["grain over array_record JPEG frames", ours_rate, ours_rate / plain_rate]])


if __name__ == "__main__":
  main()
