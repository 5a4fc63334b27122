"""The padded bucket is invisible: an image computes the same features,
proposals and detections whatever bucket it is padded into, and whatever
the padding holds (structures.Canvas; mmdetection computes each image on
its own canvas, the image padded to a multiple of 32)."""
import jax
import numpy as np
import pytest

from scnet_jax.models import build_model
from scnet_jax.training.state import init_variables
from tests.helpers import tiny_config, train_batches

SMALL, LARGE = (96, 96), (160, 224)


def _batch(image, bucket, fill):
  h, w = image.shape[:2]
  canvas = np.full((1, *bucket, 3), fill, np.uint8)
  canvas[0, :h, :w] = image
  return {"image": canvas, "image_hw": np.array([[h, w]], np.int32)}


@pytest.mark.parametrize("family", ["mask_rcnn", "scnet", "comask"])
def test_bucket_is_invisible(family):
  # Frozen BN: GroupNorm's statistics would cover the whole bucket.
  config = tiny_config(family, **{"model.backbone.norm": "frozen_bn"})
  model = build_model(config)
  variables = dict(zip(("params", "batch_stats"),
                       init_variables(model, config, 0)))
  (b,) = train_batches(config, 1, batch=1)
  image = b["image"][0, :90, :70]  # canvas 96 x 96

  def run(batch):
    out, inter = model.apply(variables, batch, method=model.predict,
                             mutable=["intermediates"])
    return out, inter["intermediates"]

  run = jax.jit(run)
  small, si = run(_batch(image, SMALL, 0))
  large, li = run(_batch(image, LARGE, 255))
  for a, c in zip(si["fpn"][0], li["fpn"][0]):
    h, w = a.shape[1:3]
    np.testing.assert_allclose(c[:, :h, :w], a, rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(c)[:, h:] == 0)
    assert np.all(np.asarray(c)[:, :, w:] == 0)
  n = int(small.num_detections[0])
  assert n > 0 and int(large.num_detections[0]) == n
  np.testing.assert_allclose(large.boxes[0, :n], small.boxes[0, :n],
                             atol=1e-3)
  np.testing.assert_allclose(large.scores[0, :n], small.scores[0, :n],
                             atol=1e-5)
  np.testing.assert_array_equal(large.labels[0, :n], small.labels[0, :n])
  np.testing.assert_allclose(large.masks[0, :n], small.masks[0, :n],
                             atol=1e-4)
