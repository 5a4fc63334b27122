"""MaxIoU assignment against torchvision's Matcher where the two define the
same thing, and the padded sampler's guarantees."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
from torchvision.models.detection import _utils as tv_utils

from scnet_jax import ops


def _boxes(rng, n, extent=200):
  xy = rng.uniform(0, extent, size=(n, 2))
  wh = rng.uniform(10, 80, size=(n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def test_matches_torchvision_matcher():
  rng = np.random.default_rng(0)
  for trial in range(5):
    gt = _boxes(rng, 7)
    boxes = _boxes(rng, 500)
    valid = np.ones(10, bool)
    valid[7:] = False
    gt_padded = np.concatenate([gt, np.zeros((3, 4), np.float32)])
    label, gt_index, max_iou = jax.jit(lambda b, g, v: ops.max_iou_assign(
        b, g, v, 0.7, 0.3, 0.0, match_low_quality=True))(boxes, gt_padded,
                                                         valid)
    iou = torch.tensor(np.asarray(ops.box_iou(gt, boxes)))
    ref = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    ref = ref.numpy()
    label = np.asarray(label)
    np.testing.assert_array_equal(label == 1, ref >= 0)
    np.testing.assert_array_equal(label == 0, ref == -1)
    np.testing.assert_array_equal(label == -1, ref == -2)
    high = np.asarray(max_iou) >= 0.7
    np.testing.assert_array_equal(np.asarray(gt_index)[high], ref[high])


def test_low_quality_respects_min_pos_iou_and_padding():
  gt = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [0, 0, 10, 10]],
                np.float32)
  boxes = np.array([[0, 0, 10, 20], [100, 100, 130, 130],
                    [300, 300, 310, 310]], np.float32)
  label, gt_index, _ = ops.max_iou_assign(
      boxes, gt, np.array([True, True, False]), 0.7, 0.3, 0.3)
  # box 0: IoU 0.5 with gt 0, its best box -> low-quality positive.
  # box 1: IoU 1/9 with gt 1 < min_pos_iou -> negative.
  np.testing.assert_array_equal(np.asarray(label), [1, 0, 0])
  assert int(gt_index[0]) == 0
  label, _, _ = ops.max_iou_assign(boxes, gt, np.zeros(3, bool), 0.7, 0.3,
                                   0.3)
  np.testing.assert_array_equal(np.asarray(label), [0, 0, 0])


def test_sampler_fills_positives_first_and_respects_fraction():
  rng = np.random.default_rng(1)
  label = rng.choice([-1, 0, 1], size=1000, p=[0.2, 0.7, 0.1]).astype(
      np.int32)
  fn = jax.jit(lambda k, l: ops.random_sample(k, l, 256, 0.25))
  idx, valid, is_pos, num_pos = fn(jax.random.PRNGKey(0), label)
  idx, valid, is_pos = map(np.asarray, (idx, valid, is_pos))
  n_pos = int(num_pos)
  assert n_pos == 64 and is_pos[:64].all() and not is_pos[64:].any()
  assert valid.all() and len(set(idx.tolist())) == 256
  assert (label[idx[:64]] == 1).all() and (label[idx[64:]] == 0).all()
  # Few candidates: unfilled slots are invalid.
  small = np.array([1, 0, 0, -1, 1], np.int32)
  idx, valid, is_pos, n = fn(jax.random.PRNGKey(1), small)
  assert int(n) == 2 and int(np.sum(valid)) == 4
  assert set(np.asarray(idx)[np.asarray(valid)].tolist()) == {0, 1, 2, 4}


def test_sampler_is_uniform():
  label = np.ones(20, np.int32)
  counts = np.zeros(20)
  fn = jax.jit(lambda k: ops.random_sample(k, label, 8, 0.25)[0][:2])
  for i in range(400):
    counts[np.asarray(fn(jax.random.PRNGKey(i)))] += 1
  # 800 draws over 20 boxes: 40 each; a biased sampler would skew this.
  assert counts.min() > 20 and counts.max() < 62
