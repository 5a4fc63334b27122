"""Parameter totals equal mmdetection's (tests/fixtures/checkpoints)."""
import json
import os
import subprocess
import sys

import pytest

from scnet_jax import config_lib
from scnet_jax.summary import part_counts
from tests.helpers import FIXTURES
from tests.xla_flags import xla_flags

SPEC = os.path.join(FIXTURES, "checkpoints")
CASES = [("scnet", "mmdet_scnet_r50_fpn_1x_coco.json", 94_799_269),
         ("htc", "mmdet_htc_r50_fpn_1x_coco.json", 80_258_293),
         ("cascade_mask_rcnn", "mmdet_cascade-mask-rcnn_r50_fpn_1x_coco.json",
          77_324_606),
         ("mask_rcnn", "mmdet_mask-rcnn_r50_fpn_1x_coco.json", 44_396_336)]


@pytest.mark.parametrize("family,spec_file,total", CASES)
def test_totals_equal_spec(family, spec_file, total):
  with open(os.path.join(SPEC, spec_file)) as f:
    spec = json.load(f)
  assert spec["total_params"] == total
  counts = part_counts(config_lib.get_base(family))
  assert sum(counts.values()) == spec["total_params"]


def test_scnet_parts_equal_spec_table():
  # mmdetection 3.3's SCNet R-50-FPN, counted per module.
  counts = part_counts(config_lib.get_base("scnet"))
  assert counts["backbone"] == 23_508_032
  assert counts["neck"] == 3_344_384
  assert counts["rpn_head"] == 593_935
  assert all(counts[f"roi_heads/bbox_head_{s}"] == 13_982_805
             for s in range(3))
  assert counts["roi_heads/feat_relay_head"] == 12_857_600
  assert counts["roi_heads/mask_head_0"] == 7_363_920
  assert counts["roi_heads/semantic_head"] == 2_802_103
  assert counts["roi_heads/glbctx_head"] == 2_380_880


def test_larger_backbones_build():
  for depth, groups, width in [(101, 1, 64), (101, 64, 4), (101, 32, 4)]:
    c = config_lib.get_base("scnet")
    c.model.backbone.update(depth=depth, groups=groups, base_width=width)
    counts = part_counts(c)
    assert counts["backbone"] > 40_000_000


def test_inspect_cli_last_line():
  root = os.path.join(os.path.dirname(__file__), "..", "..")
  out = subprocess.run(
      [sys.executable, "-m", "scnet_jax.summary", "--config",
       os.path.join(root, "configs", "htc_r50_fpn_1x_coco.py")],
      capture_output=True, text=True, check=True, cwd=root,
      env=dict(os.environ, XLA_FLAGS=xla_flags()))
  assert out.stdout.strip().splitlines()[-1] == "total params: 80258293"
