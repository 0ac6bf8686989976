"""Physical pruning: the pruned model computes the unpruned one with those blocks skipped."""

import json
import re

import numpy as np
import pytest
import torch
import transformers

from gardener_jax import load_checkpoint, prune
from gardener_jax.checkpoint import read_config
from gardener_jax.cli import main as gardener
from gardener_jax.models import ModelConfig
from tests import factories
from tools.convert_torch import HF, ORIGINAL, convert, export


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A converted 6-block HF model and the PyTorch original it came from."""
  directory = tmp_path_factory.mktemp("ckpt")
  torch_model = factories.hf_classifier(depth=6)
  torch_model.save_pretrained(directory / "hf")
  convert(directory / "hf", directory / "flax")
  return directory / "flax", torch_model


def _torch_without(torch_model, removed):
  """The reference: the PyTorch model with the blocks (1-based) deleted from its layer list."""
  import copy
  skipped = copy.deepcopy(torch_model)
  layers = skipped.videomae.encoder.layer
  skipped.videomae.encoder.layer = torch.nn.ModuleList(l for i, l in enumerate(layers) if i + 1 not in removed)
  return skipped


def test_pruned_logits_equal_the_model_with_blocks_skipped(checkpoint, tmp_path, capsys):
  flax_ckpt, torch_model = checkpoint
  x = factories.clips()
  assert gardener(["prune", str(flax_ckpt), "--blocks", "2,5", "--out", str(tmp_path / "p1")]) == 0
  assert gardener(["prune", str(tmp_path / "p1"), "--blocks", "6", "--out", str(tmp_path / "p2")]) == 0
  model, params, config = load_checkpoint(tmp_path / "p2")
  assert config.depth == 3 and config.kept_blocks == (1, 3, 4)
  expected = factories.hf_logits(_torch_without(torch_model, {2, 5, 6}), x)
  np.testing.assert_allclose(model.apply({"params": params}, x), expected, atol=1e-5, rtol=0)
  assert not np.allclose(expected, factories.hf_logits(torch_model, x), atol=1e-3)

  report = json.loads((tmp_path / "p2" / "prune_report.json").read_text())
  assert report["removed_blocks"] == [6] and report["kept_blocks"] == [1, 3, 4]
  assert report["after"]["params"] < report["before"]["params"]

  # The pruned checkpoint exports to a HuggingFace directory that transformers runs with 3 layers.
  export(tmp_path / "p2", tmp_path / "hf", HF)
  hf = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf").eval()
  assert hf.config.num_hidden_layers == 3 and hf.config.gardener_kept_blocks == [1, 3, 4]
  np.testing.assert_allclose(factories.hf_logits(hf, x), expected, atol=1e-5, rtol=0)


def test_lineage_is_recorded_not_inferred(checkpoint, tmp_path, capsys):
  """Blocks removed at the end leave no trace in kept_blocks: the original depth is recorded, kept by
  repeated pruning and carried through the PyTorch formats and back."""
  flax_ckpt, _ = checkpoint
  assert gardener(["prune", str(flax_ckpt), "--blocks", "6", "--out", str(tmp_path / "p1")]) == 0
  assert gardener(["prune", str(tmp_path / "p1"), "--blocks", "5", "--out", str(tmp_path / "p2")]) == 0
  config = read_config(tmp_path / "p2")
  assert config.kept_blocks == (1, 2, 3, 4) and config.original_depth == 6 and config.removed_blocks == (5, 6)
  assert json.loads((tmp_path / "p2" / "prune_report.json").read_text())["original_depth"] == 6
  for layout, out in ((HF, tmp_path / "hf"), (ORIGINAL, tmp_path / "vit.pth")):
    export(tmp_path / "p2", out, layout)
    convert(out, tmp_path / f"back_{layout}")
    back = read_config(tmp_path / f"back_{layout}")
    assert (back.kept_blocks, back.original_depth) == ((1, 2, 3, 4), 6), layout
  with pytest.raises(ValueError, match=r"kept_blocks \[1, 3\] without original_depth"):
    ModelConfig.from_dict({**config.to_dict(), "depth": 2, "kept_blocks": [1, 3], "original_depth": None})


def test_prune_by_criterion_and_ratio_writes_reports(checkpoint, tmp_path, capsys):
  flax_ckpt, _ = checkpoint
  assert gardener(["rank", str(flax_ckpt), "--criterion", "l2", "--json", str(tmp_path / "rank.json")]) == 0
  ranking = json.loads((tmp_path / "rank.json").read_text())
  assert gardener(["prune", str(flax_ckpt), "--criterion", "l2", "--ratio", "0.5", "--out", str(tmp_path / "out")]) == 0
  report = json.loads((tmp_path / "out" / "prune_report.json").read_text())
  assert report["removal_order"] == ranking["removal_order"][:3]
  assert read_config(tmp_path / "out").kept_blocks == tuple(sorted(set(range(1, 7)) - set(report["removed_blocks"])))
  assert {p.name for p in (tmp_path / "out").iterdir()} >= {"prune_report.md", "scores.png", "config.json", "params"}
  assert "| after / before | 0.500 |" in (tmp_path / "out" / "prune_report.md").read_text()


def test_rank_json_and_distinct_warning(checkpoint, tmp_path, capsys):
  flax_ckpt, _ = checkpoint
  assert gardener(["rank", str(flax_ckpt), "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]) == 0
  out = capsys.readouterr().out
  assert "removal order:" in out and "--discretize float16" in out  # a float32 checkpoint: exact is degenerate
  ranking = json.loads((tmp_path / "r.json").read_text())
  assert ranking["criterion"] == "entropy" and ranking["discretize"] == "exact" and ranking["num_blocks"] == 6
  assert len(ranking["scores"]) == 6 and sorted(ranking["removal_order"]) == list(range(1, 7))
  assert len(ranking["distinct_values"]) == 6 and (tmp_path / "r.png").stat().st_size > 0
  assert gardener(["rank", str(flax_ckpt), "--discretize", "hist:64"]) == 0
  assert "warning" not in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--blocks", "2,9"], r"blocks \[9\] are not in this model"),
    (["--blocks", "1,2,3,4,5,6"], "remove between 1 and 5"),
    (["--blocks", "2,2"], "listed twice"),
    (["--blocks", "a,b"], "comma-separated"),
    (["--blocks", "2", "--criterion", "l1"], "drop --criterion"),
    (["--criterion", "l1"], "exactly one of --ratio R or --remove K"),
    (["--criterion", "l1", "--ratio", "1.5"], "strictly between 0 and 1"),
    (["--criterion", "l1", "--ratio", "0.05"], "removes 0"),
    (["--criterion", "l1", "--remove", "6"], "remove between 1 and 5"),
    (["--discretize", "hist:1", "--remove", "1"], "hist:K with K ≥ 2"),
])
def test_bad_prune_requests(checkpoint, tmp_path, capsys, args, message):
  flax_ckpt, _ = checkpoint
  assert gardener(["prune", str(flax_ckpt), *args, "--out", str(tmp_path / "out")]) == 1
  assert re.search(message, capsys.readouterr().err)
  assert not (tmp_path / "out").exists()


def test_ratios_of_the_paper():
  assert [prune.num_to_remove(r, 12) for r in (0.083, 0.25, 0.417, 0.583, 0.75, 0.917)] == [1, 3, 5, 7, 9, 11]
  assert prune.num_to_remove(0.5, 3) == 2  # halves round up


def test_gflops_and_params_of_vit_b():
  vit_b = ModelConfig.from_variant("vit_b", num_classes=101)
  assert 180 < prune.gflops(vit_b) < 181  # SPEC §1: ≈ 180 GFLOPs per clip
  per_block = prune.gflops(vit_b) - prune.gflops(vit_b.replace(depth=11))
  assert 13.6 <= per_block <= 14.9
