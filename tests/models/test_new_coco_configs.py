"""The R-50 COCO configs of CoMask, Mask R-CNN + SFPN and AggMask,
unchanged but for a small bucket (128x128) and one image: the training
loss with its gradient and the inference trace (jax.eval_shape) with the
expected shapes. (Compiling and running them took 3 minutes of the
suite; the tiny configs of the same heads compile, run and are checked
for recompilation in their own tests.) Every new config counts its
parameters (what `python -m scnet_jax.summary` prints)."""
import os

import pytest

from scnet_jax.predictor import load_config
from scnet_jax.summary import part_counts
from tests.helpers import shapes_root, trace_train_and_predict

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
NEW_CONFIGS = ["comask_r50_mfpn_2x_coco", "comask_r101_mfpn_2x_coco",
               "mask_rcnn_r50_sfpn_1x_coco",
               "cascade_mask_rcnn_r101_sfpn_1x_coco", "comask_tiny_shapes",
               "mask_rcnn_sfpn_tiny_shapes", "solo_r50_fpn_3x_coco",
               "aggmask_r50_fpn_3x_coco", "aggmask_r101_fpn_3x_coco",
               "aggmask_tiny_shapes", "aggmask_interp_tiny_shapes"]


def _small(name):
  c = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  c.data.buckets = ((128, 128),)
  c.data.image_scale = (128, 128)
  c.data.train_scales = ()
  c.data.source = "shapes"
  c.data.shapes.update(root=shapes_root(), num_train=48, num_val=16)
  c.data.train.update(ann_file="", image_dir="", seg_dir="")
  c.global_batch = 1
  c.data.num_workers = 0
  return c


@pytest.mark.parametrize("name", ["comask_r50_mfpn_2x_coco",
                                  "mask_rcnn_r50_sfpn_1x_coco",
                                  "aggmask_r50_fpn_3x_coco"])
def test_r50_coco_config_traces_at_a_small_bucket(name):
  config = _small(name)
  _, out = trace_train_and_predict(config)
  d = config.model.test.max_per_img
  # Box-relative 28 x 28 masks, or a one-stage head's at stride 4.
  mask_hw = (32, 32) if config.model.type == "one_stage" else (28, 28)
  assert out.boxes.shape == (1, d, 4) and out.masks.shape == (1, d,
                                                              *mask_hw)


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_every_new_config_counts_its_parameters(name):
  config = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  counts = part_counts(config)
  assert min(counts.values()) > 0
