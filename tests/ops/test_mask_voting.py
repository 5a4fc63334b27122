"""Mask voting on hand-made candidates whose merged masks are known: the
boxes sit on the mask grid, so every resampling is exact."""
import jax
import numpy as np

from scnet_jax import ops

BOX = [0.0, 0.0, 8.0, 8.0]
LEFT = np.array([[1, 1, 0, 0]] * 4, np.float32)    # left half of the box
TOP = LEFT.T.copy()                                # top half


def _vote(det_boxes, det_labels, cand_boxes, cand_masks, cand_scores,
          **kw):
  f = jax.jit(lambda *a: ops.mask_voting(*a, iou_thr=0.5, mask_thr=0.4,
                                         **kw))
  boxes, masks = f(np.asarray(det_boxes, np.float32),
                   np.asarray(det_labels, np.int32),
                   np.ones(len(det_labels), bool),
                   np.asarray(cand_boxes, np.float32),
                   np.asarray(cand_masks, np.float32),
                   np.asarray(cand_scores, np.float32),
                   np.ones(len(cand_boxes), bool))
  return np.asarray(boxes), np.asarray(masks)


def test_two_masks_of_one_class_merge_by_score():
  # A (left half, 0.6) and B (top half, 0.4) share a box: a cell covered
  # by both gets 1, by A 0.6, by B 0.4, by neither 0; every cell but the
  # bottom-right quadrant is >= 0.4, so the tight box stays the box.
  boxes, masks = _vote([BOX], [0], [BOX, BOX], [LEFT, TOP],
                       [[0.6, 0.0], [0.4, 0.0]])
  expected = np.array([[1.0, 1.0, 0.4, 0.4], [1.0, 1.0, 0.4, 0.4],
                       [0.6, 0.6, 0.0, 0.0], [0.6, 0.6, 0.0, 0.0]])
  np.testing.assert_allclose(masks[0], expected, atol=1e-6)
  np.testing.assert_allclose(boxes[0], BOX, atol=1e-5)


def test_different_classes_do_not_merge():
  # C (bottom half) is class 1 only: it does not vote for A's class-0
  # detection, and A and B do not vote for C's class-1 detection.
  bottom = TOP[::-1].copy()
  boxes, masks = _vote([BOX, BOX], [0, 1], [BOX, BOX, BOX],
                       [LEFT, TOP, bottom],
                       [[0.6, 0.0], [0.4, 0.0], [0.0, 0.9]])
  np.testing.assert_allclose(masks[0][:2], [[1, 1, .4, .4]] * 2, atol=1e-6)
  np.testing.assert_allclose(masks[0][2:], [[.6, .6, 0, 0]] * 2, atol=1e-6)
  # Alone, C keeps its own mask: the bottom half, whose tight box is the
  # box's bottom half, over which the mask is full.
  np.testing.assert_allclose(boxes[1], [0, 4, 8, 8], atol=1e-5)
  np.testing.assert_allclose(masks[1], np.ones((4, 4)), atol=1e-6)


def test_low_overlap_does_not_vote_and_the_box_shrinks_to_the_mask():
  # D overlaps A's box with IoU 1/3 < 0.5: no vote. A's own left half
  # gives the tight box [0, 0, 4, 8], filled.
  boxes, masks = _vote([BOX], [0], [BOX, [4.0, 0.0, 12.0, 8.0]],
                       [LEFT, np.ones((4, 4), np.float32)],
                       [[0.6], [0.9]])
  np.testing.assert_allclose(boxes[0], [0, 0, 4, 8], atol=1e-5)
  np.testing.assert_allclose(masks[0], np.ones((4, 4)), atol=1e-6)


def test_voters_outside_the_box_widen_the_frame():
  # E's box [0, 0, 16, 8] (IoU 0.5 with A) is full: the merged mask covers
  # E's box, 1.0 where A's left half votes too, 0.5 (>= 0.4) elsewhere.
  boxes, masks = _vote([BOX], [0], [BOX, [0.0, 0.0, 16.0, 8.0]],
                       [LEFT, np.ones((4, 4), np.float32)], [[0.5], [0.5]])
  np.testing.assert_allclose(boxes[0], [0, 0, 16, 8], atol=1e-5)
  np.testing.assert_allclose(masks[0], [[1.0, 0.5, 0.5, 0.5]] * 4,
                             atol=1e-6)
