"""The paper's recipe (see ucf101_vitb.py) on HMDB51 split 1.

  gardener train --config configs/hmdb51_vitb.py:3 --workdir runs/hmdb51_k3 \\
      --config.init.source=path/to/videomae-base-finetuned-kinetics --config.data.manual_dir=~/hmdb51
"""

from configs import ucf101_vitb


def get_config(removed: str = "3"):
  config = ucf101_vitb.get_config(removed)
  config.data.update(name="hmdb51", config="split_1")
  return config
