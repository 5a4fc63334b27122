"""Box coder and anchors against torchvision's detection utilities and the
spec's anchor facts."""
import jax
import numpy as np
import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from scnet_jax import ops


def _boxes(rng, n):
  xy = rng.uniform(0, 300, size=(n, 2))
  wh = rng.uniform(2, 200, size=(n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("stds", [(1., 1., 1., 1.), (0.1, 0.1, 0.2, 0.2),
                                  (0.033, 0.033, 0.067, 0.067)])
def test_encode_decode_match_torchvision_boxcoder(stds):
  # torchvision's BoxCoder weights are mmdet's 1 / stds (means 0).
  rng = np.random.default_rng(0)
  props, gt = _boxes(rng, 200), _boxes(rng, 200)
  coder = tv_utils.BoxCoder(tuple(1.0 / s for s in stds))
  ref = coder.encode_single(torch.tensor(gt), torch.tensor(props)).numpy()
  ours = np.asarray(jax.jit(lambda p, g: ops.encode_deltas(p, g, stds=stds))(
      props, gt))
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
  deltas = (rng.normal(0, 5, size=(200, 4)) / np.asarray(stds)).astype(
      np.float32)
  ref = coder.decode_single(torch.tensor(deltas), torch.tensor(props)).numpy()
  assert np.any(deltas[:, 2:] * stds[2:] < -4.2)  # exercises the clamp
  ours = np.asarray(ops.decode_deltas(props, deltas, stds=stds,
                                      clamp="upper"))
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)
  mmdet = np.asarray(ops.decode_deltas(props, deltas, stds=stds))
  assert not np.allclose(mmdet, ref, rtol=1e-4, atol=1e-3)


def test_decode_clamp_and_clip():
  props = np.array([[10, 10, 20, 30]], np.float32)
  big = np.array([[0, 0, 100, -100]], np.float32)
  out = np.asarray(ops.decode_deltas(props, big))
  w, h = out[0, 2] - out[0, 0], out[0, 3] - out[0, 1]
  np.testing.assert_allclose(w, 10 * 1000 / 16, rtol=1e-5)
  np.testing.assert_allclose(h, 20 * 16 / 1000, rtol=1e-5)
  clipped = np.asarray(ops.decode_deltas(props, big, image_hw=(50, 40)))
  assert clipped[0, 0] == 0 and clipped[0, 2] == 40


def test_iou_and_area_bfloat16_inputs():
  rng = np.random.default_rng(1)
  a = _boxes(rng, 5)
  bf = jax.numpy.asarray(a, jax.numpy.bfloat16)
  iou = ops.box_iou(bf, bf)
  assert iou.dtype == np.float32
  np.testing.assert_allclose(np.diag(np.asarray(iou)), 1.0, atol=1e-6)
  np.testing.assert_allclose(ops.box_area(bf), ops.box_area(
      np.asarray(bf, np.float32)), rtol=1e-6)


def test_rounded_anchors_match_torchvision():
  sizes = ((32,), (64,), (128,), (256,), (512,))
  gen = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
  image = torch.zeros(1, 3, 128, 192)
  strides = [4, 8, 16, 32, 64]
  feats = [torch.zeros(1, 1, 128 // s, 192 // s) for s in strides]
  ref = gen(ImageList(image, [(128, 192)]), feats)[0].numpy()
  ours = np.concatenate([ops.grid_anchors((128 // s, 192 // s), s,
                                          round_to_int=True)
                         for s in strides])
  np.testing.assert_allclose(ours, ref)


def test_mmdet_anchor_facts():
  # mmdetection's AnchorGenerator: sizes 8 * stride, h = 8 s sqrt(r), no rounding, ratio
  # order 0.5, 1, 2, centres at the cell's top-left, (y W + x) A + a.
  for s in (4, 8, 16, 32, 64):
    base = ops.base_anchors(s)
    w = base[:, 2] - base[:, 0]
    h = base[:, 3] - base[:, 1]
    np.testing.assert_allclose(h / w, [0.5, 1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(w * h), 8 * s, rtol=1e-6)
    np.testing.assert_allclose(h, 8 * s * np.sqrt([0.5, 1, 2]), rtol=1e-6)
  grid = ops.grid_anchors((3, 5), 16)
  y, x, a = 2, 3, 1
  anchor = grid[(y * 5 + x) * 3 + a]
  np.testing.assert_allclose((anchor[:2] + anchor[2:]) / 2, [x * 16, y * 16])
  np.testing.assert_allclose(anchor[2] - anchor[0], 128)


def test_valid_and_inside_flags():
  image_hw = np.array([[100, 60], [128, 128]], np.int32)
  valid = np.asarray(ops.valid_flags((16, 16), 8, 3, image_hw))
  # image 0: padded to 128 x 64 -> ceil(64 / 8) = 8 valid columns.
  cells = valid[0].reshape(16, 16, 3)[..., 0]
  assert cells[:, :8].all() and not cells[:, 8:].any()
  assert valid[1].all()
  anchors = ops.grid_anchors((16, 16), 8)
  inside = np.asarray(ops.inside_flags(anchors, valid, image_hw, 0))
  ok = ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < 60)
        & (anchors[:, 3] < 100))
  np.testing.assert_array_equal(inside[0], ok & valid[0])
  assert np.asarray(ops.inside_flags(anchors, valid, image_hw, -1)).sum() \
      == valid.sum()
