"""Test-time augmentation: with a flip in the views, predicting a mirrored
image gives the mirrored detections (so a horizontally symmetric image
gets symmetric detections), masks included; views map boxes both ways."""
import os

import numpy as np
import pytest
from PIL import Image

from scnet_jax.errors import ConfigError
from scnet_jax.evaluation.tta import TTAPredictor, View, flip_boxes
from scnet_jax.models import build_model
from scnet_jax.training.state import init_variables
from tests.helpers import shapes_root, tiny_config


def _image():
  folder = f"{shapes_root()}/val"
  return np.asarray(Image.open(os.path.join(folder, sorted(
      os.listdir(folder))[1])).convert("RGB"))


def test_flip_tta_of_a_mirrored_image_is_mirrored():
  config = tiny_config("scnet", **{"model.test.score_thr": 0.0,
                                   "test_aug.scales": ((128, 128),),
                                   "test_aug.flip": True})
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  tta = TTAPredictor(config, {"params": params, "batch_stats": stats})
  image = _image()
  a, b = tta(image), tta(image[:, ::-1])
  n = int(a["num_detections"])
  assert n == int(b["num_detections"]) > 0
  ia, ib = np.argsort(-a["scores"][:n]), np.argsort(-b["scores"][:n])
  np.testing.assert_allclose(b["scores"][ib], a["scores"][ia], rtol=1e-5)
  np.testing.assert_array_equal(b["labels"][ib], a["labels"][ia])
  np.testing.assert_allclose(b["boxes"][ib],
                             flip_boxes(a["boxes"][ia], image.shape[1]),
                             atol=1e-3)
  np.testing.assert_allclose(b["masks"][ib], a["masks"][ia][:, :, ::-1],
                             atol=1e-4)


def test_views_map_boxes_to_the_original_and_back():
  config = tiny_config("scnet")
  image = np.zeros((100, 60, 3), np.uint8)
  view = View(image, (160, 160), True, config.data)
  assert (view.h, view.w) == (160, 96)
  assert view.canvas.shape == (1, 160, 160, 3)
  box = np.array([[10.0, 20.0, 30.0, 50.0]])
  inside = view.from_original(box)
  np.testing.assert_allclose(inside, [[96 - 48, 32, 96 - 16, 80]])
  np.testing.assert_allclose(view.to_original(inside), box, atol=1e-5)


@pytest.mark.parametrize("family", ["comask", "mnc"])
def test_heads_without_tta_are_refused_in_one_line(family):
  """CoMask's boxes come from its mask head, MNC predicts in 5 stages:
  neither is the box and mask steps the views merge."""
  with pytest.raises(ConfigError, match=rf"^eval.py --tta: model.roi_heads"
                     rf".type '{family}' has no test-time augmentation"):
    TTAPredictor(tiny_config(family), {})
