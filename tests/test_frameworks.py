"""Flax and PyTorch on the same views: `gardener evaluate --framework both` on converted and pruned
models, its agreement with the training loop's evaluator, and a finetuned job's HuggingFace export
answering `transformers.pipeline('video-classification')` with class names and gardener's scores."""

import json

import av
import numpy as np
import pytest
import transformers

from gardener_jax import cli, pipeline
from gardener_jax.checkpoint import load_tree, read_config
from gardener_jax.data import builders, input_pipeline, sources
from gardener_jax.evaluate import classification_evaluator
from gardener_jax.models import VideoMAE
from gardener_jax.sharding import make_mesh
from tests import factories
from tests.train_setup import CLASSES
from tools.convert_torch import convert

MODEL = dict(width=48, depth=4, num_heads=4, mlp_dim=96, num_classes=len(CLASSES), num_frames=4, image_size=32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  builders.build("synthetic_motion", path, "tiny")
  return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A random transformers VideoMAE that names the tiny set's classes, converted; and that model pruned."""
  root = tmp_path_factory.mktemp("models")
  model = factories.hf_classifier(seed=3, **MODEL)
  model.config.id2label = dict(enumerate(CLASSES))
  model.config.label2id = {name: i for i, name in enumerate(CLASSES)}
  model.save_pretrained(root / "hf")
  convert(root / "hf", root / "full")
  assert cli.main(["prune", str(root / "full"), "--blocks", "2,3", "--out", str(root / "pruned")]) == 0
  return root


def _evaluate(capsys, checkpoint, *flags):
  out = checkpoint.parent / f"{checkpoint.name}_evaluate.json"
  code = cli.main(["evaluate", str(checkpoint), *flags, "--json", str(out)])
  captured = capsys.readouterr()
  return code, captured, json.loads(out.read_text()) if code == 0 else None


@pytest.mark.parametrize("name", ["full", "pruned"])
def test_both_frameworks_score_the_same_views_alike(converted, data_dir, capsys, name):
  checkpoint = converted / name
  config = read_config(checkpoint)
  assert config.class_names == tuple(CLASSES) and config.depth == (4 if name == "full" else 2)
  code, captured, result = _evaluate(capsys, checkpoint, "--dataset", "synthetic_motion", "--data_dir",
                                     str(data_dir), "--framework", "both", "--num_clips", "2", "--sampling_rate", "3")
  assert code == 0, captured.err
  flax, torch = result["flax"], result["torch"]
  assert flax["videos"] == torch["videos"] == result["videos"] == 8 and result["skipped"] == 0
  assert {k: flax[k] for k in ("war", "uar", "top1", "top5")} == {k: torch[k] for k in ("war", "uar", "top1", "top5")}
  assert result["agreement"] == 100.0 and 0 < result["max_logit_diff"] < 1e-4
  assert result["views"] == dict(num_clips=2, num_crops=1, num_frames=4, sampling_rate=3, image_size=32)
  assert "| flax | 8 |" in captured.out and "| torch | 8 |" in captured.out

  # The Flax numbers are the training loop's: its evaluator on the same split and views gives them too.
  spec = input_pipeline.ClipSpec(4, 3, 32, num_clips=2, augment=False)
  test = sources.open_split(data_dir, "synthetic_motion", "test")[0]
  evaluator = classification_evaluator(make_mesh(), VideoMAE(config), test, input_pipeline.Pipelines(spec, spec),
                                       len(CLASSES), "test")
  loop = evaluator(load_tree(checkpoint)["params"])
  assert {k: loop[k] for k in ("war", "uar", "top5")} == pytest.approx({k: flax[k] for k in ("war", "uar", "top5")})


def test_a_batch_of_unreadable_videos_is_skipped_and_counted(converted, data_dir):
  from gardener_jax import frameworks
  from tests.train_setup import corrupted

  test = sources.open_split(data_dir, "synthetic_motion", "test")[0]
  examples = corrupted([test[i] for i in range(len(test))], len(test) - 1)  # the last batch holds only this one
  classifiers = frameworks.load_classifiers(converted / "full", ["flax"])
  spec = input_pipeline.ClipSpec(4, 3, 32, augment=False)
  result = frameworks.evaluate_split(classifiers, examples, spec, batch_size=len(test) - 1)
  whole = frameworks.evaluate_split(classifiers, examples[:-1], spec, batch_size=len(test) - 1)
  assert result["videos"] == len(test) - 1 and result["skipped"] == 1 and result["flax"] == whole["flax"]


def test_evaluate_errors_name_what_is_wrong(converted, data_dir, tmp_path, capsys):
  code, captured, _ = _evaluate(capsys, converted / "full", "--framework", "both")
  assert code == 1 and "--dataset NAME and --data_dir DIR" in captured.err

  renamed = factories.hf_classifier(seed=1, **{**MODEL, "num_classes": 3})
  renamed.save_pretrained(tmp_path / "hf3")
  convert(tmp_path / "hf3", tmp_path / "three")  # LABEL_0 … LABEL_2: no class names to match the dataset's by
  code, captured, _ = _evaluate(capsys, tmp_path / "three", "--dataset", "synthetic_motion", "--data_dir",
                                str(data_dir))
  assert code == 1 and "4 classes, but the checkpoint's head has 3 outputs and no class names" in captured.err

  layer_scale = factories.original_classifier(seed=2, layer_scale=True)
  import torch
  torch.save({"model": layer_scale.state_dict()}, tmp_path / "release.pth")
  convert(tmp_path / "release.pth", tmp_path / "layer_scale", overrides=dict(num_heads=4, num_frames=4, image_size=32))
  frames = tmp_path / "clip.avi"
  from gardener_jax.data import video_io
  video_io.write_video(frames, np.random.default_rng(0).integers(0, 256, (6, 40, 36, 3), np.uint8))
  code, captured, _ = _evaluate(capsys, tmp_path / "layer_scale", "--video", str(frames), "--framework", "torch")
  assert code == 1 and "pass --fold_layer_scale" in captured.err
  code, captured, result = _evaluate(capsys, tmp_path / "layer_scale", "--video", str(frames), "--framework", "both",
                                     "--fold_layer_scale", "--sampling_rate", "1")
  assert code == 0 and "layer scale folded" in captured.err
  assert result["videos"][0]["max_logit_diff"] < 1e-4
  assert [p["label"] for p in result["videos"][0]["flax"]] == [p["label"] for p in result["videos"][0]["torch"]]


def _write_lossless(path, frames: np.ndarray) -> None:
  """FFV1 in Matroska: every decoder reads back exactly these RGB frames."""
  with av.open(str(path), "w") as container:
    stream = container.add_stream("ffv1", rate=25)
    stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "bgr0"
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def test_a_finetuned_job_exports_a_model_the_transformers_pipeline_runs(data_dir, tmp_path, capsys):
  from configs import demo

  config = demo.get_config()
  config.data.update(config="tiny", data_dir=str(data_dir), classes=tuple(CLASSES), image_size=32, num_frames=8,
                     val_fraction=0.0, num_clips=1)
  config.init.source = "random_hf"
  config.model.num_classes = 3  # the random source's head: the job replaces it for the 4 classes
  config.prune.update(discretize="hist:64")
  config.train.update(epochs=1, batch_size=8)
  pipeline.run(config, tmp_path / "job")
  final = read_config(tmp_path / "job" / "final")
  assert final.class_names == tuple(CLASSES) and final.depth == 3

  assert cli.main(["convert", "--to-hf", str(tmp_path / "job" / "final"), str(tmp_path / "hf")]) == 0
  frames = np.random.default_rng(5).integers(0, 256, (8, 32, 32, 3), np.uint8)  # the model's frames and size
  _write_lossless(tmp_path / "clip.mkv", frames)
  classify = transformers.pipeline("video-classification", model=str(tmp_path / "hf"))
  answers = classify(str(tmp_path / "clip.mkv"), top_k=4)

  capsys.readouterr()
  code, captured, ours = _evaluate(capsys, tmp_path / "job" / "final", "--video", str(tmp_path / "clip.mkv"),
                                   "--sampling_rate", "1")
  assert code == 0, captured.err
  ours = ours["videos"][0]["flax"]
  assert sorted(a["label"] for a in answers) == sorted(CLASSES)
  assert [a["label"] for a in answers] == [o["label"] for o in ours]
  np.testing.assert_allclose([a["score"] for a in answers], [o["score"] for o in ours], atol=1e-5)
