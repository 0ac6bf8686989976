"""Reading and writing videos (PyAV) and the JPEG frames stored in the datasets (simplejpeg)."""

from __future__ import annotations

import pathlib

import numpy as np


class VideoError(Exception):
  """A video that cannot be read or decoded; the message names the file."""


def read_video(path) -> tuple[np.ndarray, float]:
  """All frames of a video file, (T, H, W, 3) uint8 RGB, and its frame rate."""
  import av

  try:
    with av.open(str(path)) as container:
      stream = container.streams.video[0]
      fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
      frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
  except (av.FFmpegError, IndexError, OSError, ValueError) as e:
    raise VideoError(f"{path}: cannot decode video ({e})") from None
  if not frames:
    raise VideoError(f"{path}: no video frames")
  return np.stack(frames), fps


def write_video(path, frames: np.ndarray, fps: float = 25.0) -> None:
  """Writes (T, H, W, 3) uint8 frames: MPEG-4 in .mp4 files, Motion-JPEG otherwise (e.g. .avi)."""
  import av

  path = pathlib.Path(path)
  codec, pix_fmt = ("mpeg4", "yuv420p") if path.suffix == ".mp4" else ("mjpeg", "yuvj420p")
  with av.open(str(path), "w") as container:
    stream = container.add_stream(codec, rate=int(round(fps)))
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = pix_fmt
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
    container.mux(stream.encode())


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """(T, H, W, 3) uint8 frames resized to (T, height, width, 3), bilinear; unchanged if already that size."""
  from PIL import Image

  if frames.shape[1:3] == (height, width):
    return frames
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
  """Resizes (T, H, W, 3) frames so that min(H, W) == short_side, keeping the aspect ratio."""
  height, width = frames.shape[1:3]
  scale = short_side / min(height, width)
  return resize(frames, max(1, round(height * scale)), max(1, round(width * scale)))


def encode_jpeg(frames: np.ndarray, quality: int = 90) -> list[bytes]:
  import simplejpeg

  return [simplejpeg.encode_jpeg(np.ascontiguousarray(f), quality=quality, colorspace="RGB") for f in frames]


def jpeg_size(jpegs, index: int) -> tuple[int, int]:
  """(height, width) of stored frame `index`, read from its JPEG header."""
  import simplejpeg

  try:
    height, width, _, _ = simplejpeg.decode_jpeg_header(jpegs[index])
  except (ValueError, IndexError) as e:
    raise VideoError(f"cannot read stored JPEG frame {index}'s header ({e})") from None
  return height, width


def decode_jpeg(jpegs, indices, min_size: tuple[int, int] | None = None) -> np.ndarray:
  """Decodes only the frames at `indices`: (len(indices), H, W, 3) uint8.

  With `min_size` (height, width), a frame at least twice that size is decoded at a reduced scale
  (1/2, 3/8, 1/4 or 1/8, the smallest that keeps both sides at least `min_size`), which libjpeg
  does in the DCT domain, several times faster; smaller frames are decoded whole (scales between
  1/2 and 1 decode more slowly than the full frame).
  """
  import simplejpeg

  scaled = {"min_height": min_size[0], "min_width": min_size[1], "min_factor": 2} if min_size else {}
  try:
    return np.stack([simplejpeg.decode_jpeg(jpegs[i], colorspace="RGB", **scaled) for i in indices])
  except (ValueError, IndexError) as e:
    raise VideoError(f"cannot decode stored JPEG frames ({e})") from None
