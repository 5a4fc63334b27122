"""The R-50 COCO configs of CoMask and Mask R-CNN + SFPN, unchanged but
for a small bucket (128x128) and one image: one jitted train step and one
inference call compile, run finite with the expected shapes, and do not
recompile on new data. The inspect CLI prints every new config's total."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from scnet_jax.inspect import part_counts
from scnet_jax.models import build_model
from scnet_jax.predictor import load_config
from scnet_jax.training.state import init_variables
from tests.helpers import max_abs, shapes_root, train_batches

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
NEW_CONFIGS = ["comask_r50_mfpn_2x_coco", "comask_r101_mfpn_2x_coco",
               "mask_rcnn_r50_sfpn_1x_coco",
               "cascade_mask_rcnn_r101_sfpn_1x_coco", "comask_tiny_shapes",
               "mask_rcnn_sfpn_tiny_shapes"]


def _small(name):
  c = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  c.data.buckets = ((128, 128),)
  c.data.image_scale = (128, 128)
  c.data.source = "shapes"
  c.data.shapes.update(root=shapes_root(), num_train=48, num_val=16)
  c.data.train.update(ann_file="", image_dir="", seg_dir="")
  c.global_batch = 1
  c.data.num_workers = 0
  return c


@pytest.mark.parametrize("name", ["comask_r50_mfpn_2x_coco",
                                  "mask_rcnn_r50_sfpn_1x_coco"])
def test_r50_coco_config_compiles_once_at_a_small_bucket(name):
  config = _small(name)
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  b1, b2 = train_batches(config, 2)

  def total(p, b, key):
    losses = model.apply({"params": p, "batch_stats": stats}, b,
                         method=model.loss, rngs={"sample": key})
    return sum(losses.values()), losses

  step = jax.jit(jax.value_and_grad(total, has_aux=True))
  (_, losses), grads = step(params, b1, jax.random.PRNGKey(0))
  assert all(np.isfinite(float(v)) for v in losses.values()), losses
  assert np.isfinite(max_abs(grads))
  step(params, b2, jax.random.PRNGKey(1))
  assert step._cache_size() == 1
  predict = jax.jit(lambda p, b: model.apply(
      {"params": p, "batch_stats": stats}, b, method=model.predict))
  out = predict(params, b1)
  d = config.model.test.max_per_img
  assert out.boxes.shape == (1, d, 4) and out.masks.shape == (1, d, 28, 28)
  assert np.isfinite(np.asarray(out.boxes)).all()
  predict(params, b2)
  assert predict._cache_size() == 1


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_every_new_config_counts_its_parameters(name):
  config = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  counts = part_counts(config)
  assert min(counts.values()) > 0


def test_inspect_cli_prints_the_total():
  out = subprocess.run(
      [sys.executable, "-m", "scnet_jax.inspect", "--config",
       os.path.join(ROOT, "configs", "comask_r50_mfpn_2x_coco.py")],
      capture_output=True, text=True, check=True, cwd=ROOT,
      env=dict(os.environ, XLA_FLAGS=""))
  assert out.stdout.strip().splitlines()[-1] == "total params: 83283524"
