"""NMS and batched NMS against torchvision.ops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from scnet_jax import ops


def _random_boxes(rng, n, extent=500.0, size=(10, 120)):
  xy = rng.uniform(0, extent, size=(n, 2))
  wh = rng.uniform(*size, size=(n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def _ours(boxes, scores, thr, max_output, labels=None, valid=None):
  if labels is None:
    fn = jax.jit(lambda b, s, v: ops.nms(b, s, thr, max_output, valid=v))
    keep, n = fn(boxes, scores, valid)
  else:
    fn = jax.jit(lambda b, s, l, v: ops.batched_nms(b, s, l, thr, max_output,
                                                    valid=v))
    keep, n = fn(boxes, scores, labels, valid)
  keep, n = np.asarray(keep), int(n)
  assert np.all(keep[n:] == -1) and np.all(keep[:n] >= 0)
  return keep[:n]


@pytest.mark.parametrize("n,thr", [(1, 0.5), (300, 0.5), (2000, 0.7),
                                   (3000, 0.3)])
def test_nms_matches_torchvision(n, thr):
  rng = np.random.default_rng(n)
  boxes = _random_boxes(rng, n)
  scores = rng.permutation(n).astype(np.float32) / n   # no ties
  ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores),
                            thr).numpy()
  np.testing.assert_array_equal(_ours(boxes, scores, thr, n), ref)


def test_max_output_truncates_in_score_order():
  rng = np.random.default_rng(0)
  boxes = _random_boxes(rng, 1000)
  scores = rng.permutation(1000).astype(np.float32)
  ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores),
                            0.5).numpy()
  np.testing.assert_array_equal(_ours(boxes, scores, 0.5, 50), ref[:50])


def test_ties_in_scores():
  rng = np.random.default_rng(1)
  boxes = _random_boxes(rng, 400, extent=100)
  scores = rng.integers(0, 5, 400).astype(np.float32)
  ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores),
                            0.5).numpy()
  ours = _ours(boxes, scores, 0.5, 400)
  # Equal scores: the same boxes survive with the same score sequence.
  assert set(ours) == set(ref)
  np.testing.assert_array_equal(scores[ours], scores[ref])


def test_padding_and_degenerate_boxes():
  rng = np.random.default_rng(2)
  boxes = _random_boxes(rng, 200)
  boxes[:10, 2:] = boxes[:10, :2]          # zero area
  scores = rng.permutation(200).astype(np.float32)
  valid = np.ones(200, bool)
  valid[50:80] = False
  ref_idx = np.nonzero(valid)[0]
  ref = torchvision.ops.nms(torch.tensor(boxes[valid]),
                            torch.tensor(scores[valid]), 0.5).numpy()
  np.testing.assert_array_equal(
      _ours(boxes, scores, 0.5, 200, valid=valid), ref_idx[ref])
  assert len(_ours(boxes, scores, 0.5, 10, valid=np.zeros(200, bool))) == 0


def test_empty_input():
  keep, n = ops.nms(jnp.zeros((0, 4)), jnp.zeros((0,)), 0.5, 5)
  assert keep.shape == (5,) and int(n) == 0 and np.all(np.asarray(keep) == -1)


@pytest.mark.parametrize("n", [500, 3000])
def test_batched_nms_matches_torchvision(n):
  rng = np.random.default_rng(n)
  boxes = _random_boxes(rng, n)
  scores = rng.permutation(n).astype(np.float32) / n
  labels = rng.integers(0, 7, n)
  ref = torchvision.ops.batched_nms(torch.tensor(boxes), torch.tensor(scores),
                                    torch.tensor(labels), 0.5).numpy()
  np.testing.assert_array_equal(_ours(boxes, scores, 0.5, n, labels), ref)


def test_box_iou_matches_torchvision():
  rng = np.random.default_rng(4)
  a = _random_boxes(rng, 50)
  b = _random_boxes(rng, 70)
  b[0] = [3, 3, 3, 3]
  ref = torchvision.ops.box_iou(torch.tensor(a), torch.tensor(b)).numpy()
  ref = np.nan_to_num(ref)
  np.testing.assert_allclose(np.asarray(jax.jit(ops.box_iou)(a, b)), ref,
                             atol=1e-6)
  bf = ops.box_iou(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16))
  assert bf.dtype == jnp.float32
  assert ops.box_iou(jnp.zeros((0, 4)), b).shape == (0, 70)


def test_bad_input_raises_clear_error():
  with pytest.raises(ValueError, match="same length"):
    ops.nms(jnp.zeros((5, 4)), jnp.zeros((4,)), 0.5, 3)
  with pytest.raises(ValueError, match="rank"):
    ops.nms(jnp.zeros((5,)), jnp.zeros((5,)), 0.5, 3)
  with pytest.raises(ValueError, match="max_output"):
    ops.nms(jnp.zeros((5, 4)), jnp.zeros((5,)), 0.5, 0)
