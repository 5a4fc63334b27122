"""Mask voting (MNC, Dai, He and Sun 2016; the authors'
`transform/mask_transform.py`): each detection's mask becomes the
score-weighted mean of the binarised masks of every candidate that
overlaps it, with the same class's scores as weights, and its box the
tight box of that merged mask.

For one detection d of class c with box b_d:
  voters j: candidates with box IoU(b_j, b_d) >= iou_thr, weight
            w_j = score_j[c] (a candidate votes for every class with its
            score of that class; 0 for another class's detection when its
            score there is 0);
  frame:    the box enclosing b_d and the voters' boxes, an R x R grid;
  merged:   sum_j w_j [mask_j resized to b_j, 0 outside b_j, >= mask_thr]
            / sum_j w_j on the frame's cell centres;
  output:   the tight box of the frame cells with merged >= mask_thr and
            merged resampled onto it (R x R); b_d and an empty mask when
            no cell reaches mask_thr.
Masks are resized as cv2.resize does (bilinear, half-pixel centres, edge
values repeated inside the box), every step a separable resampling.

Static shapes: at most `max_voters` voters per detection, the ones with
the largest weights (exact while fewer candidates overlap a detection).
"""
import jax
import jax.numpy as jnp

from scnet_jax.ops._checks import check_rank
from scnet_jax.ops.boxes import box_iou


def _taps(coords, lo, hi, size):
  """[..., n, size] bilinear weights of positions `coords` [..., n] in a
  grid of `size` cells, clamped to the cell range [lo, hi] ([..., 1])."""
  c = jnp.clip(coords, lo, hi)
  return jnp.maximum(0.0, 1.0 - jnp.abs(
      c[..., None] - jnp.arange(size, dtype=jnp.float32)))


def _resample(values, src_boxes, dst_boxes, out_size, inside_only):
  """Resamples [..., M, M] values over src_boxes [..., 4] at the
  out_size x out_size cell centres of dst_boxes [..., 4].

  inside_only: cell centres outside the source box read 0 (a candidate's
  mask pasted into the frame; the mask's edge cells repeat inside it);
  otherwise dst_boxes are unions of source cells (a tight box) and the
  values of those cells only are read, their edge cells repeated.
  """
  m = values.shape[-1]
  cell = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) / out_size

  def axis_taps(a0, a1):
    s0, s1 = src_boxes[..., a0, None], src_boxes[..., a1, None]
    d0, d1 = dst_boxes[..., a0, None], dst_boxes[..., a1, None]
    pos = d0 + cell * (d1 - d0)                       # [..., out]
    to_cells = lambda x: (x - s0) / jnp.maximum(s1 - s0, 1e-6) * m
    coord = to_cells(pos) - 0.5
    if inside_only:
      taps = _taps(coord, 0.0, m - 1.0, m)
      return taps * ((pos >= s0) & (pos < s1))[..., None]
    lo = jnp.clip(jnp.round(to_cells(d0)), 0.0, m - 1.0)
    hi = jnp.clip(jnp.round(to_cells(d1)) - 1.0, lo, m - 1.0)
    return _taps(coord, lo, hi, m)                    # [..., out, M]

  ty, tx = axis_taps(1, 3), axis_taps(0, 2)
  return jnp.einsum("...um,...mn,...vn->...uv", ty, values, tx)


def _tight_box(merged, frame, thr):
  """(tight box [D, 4] of the frame cells with merged >= thr, any [D])."""
  r = merged.shape[-1]
  on = merged >= thr
  rows, cols = on.any(axis=-1), on.any(axis=-2)      # [D, R]
  idx = jnp.arange(r, dtype=jnp.float32)

  def extent(mask, a0, a1):
    first = jnp.min(jnp.where(mask, idx, r), axis=-1)
    last = jnp.max(jnp.where(mask, idx, -1), axis=-1) + 1.0
    step = (frame[:, a1] - frame[:, a0]) / r
    return frame[:, a0] + first * step, frame[:, a0] + last * step

  y1, y2 = extent(rows, 1, 3)
  x1, x2 = extent(cols, 0, 2)
  return jnp.stack([x1, y1, x2, y2], axis=-1), rows.any(axis=-1)


def mask_voting(det_boxes, det_labels, det_valid, cand_boxes, cand_masks,
                cand_scores, cand_valid, *, iou_thr=0.5, mask_thr=0.4,
                max_voters=64):
  """Merges the candidates' masks into each detection's (one image).

  Args:
    det_boxes: [D, 4] detections (x1, y1, x2, y2), e.g. after NMS.
    det_labels: [D] int32 class of each detection.
    det_valid: [D] bool.
    cand_boxes: [N, 4] candidate boxes, each its mask's box.
    cand_masks: [N, M, M] float mask probabilities over the boxes.
    cand_scores: [N, C] float class scores (background dropped).
    cand_valid: [N] bool.
    iou_thr: box IoU a voter needs with the detection (0.5).
    mask_thr: binarisation threshold of the voters' and the merged masks.
    max_voters: static cap on voters per detection.
  Returns:
    boxes [D, 4] float32, the tight boxes of the merged masks (the
    detection's box when the merged mask is empty; 0 for invalid rows);
    masks [D, M, M] float32 in [0, 1] over those boxes: the weighted
    fraction of the voters covering each cell (>= mask_thr is the merged
    mask); 0 for invalid rows.
  """
  check_rank("mask_voting det_boxes", det_boxes, 2, 4)
  check_rank("mask_voting cand_boxes", cand_boxes, 2, 4)
  check_rank("mask_voting cand_masks", cand_masks, 3)
  check_rank("mask_voting cand_scores", cand_scores, 2)
  det_boxes = det_boxes.astype(jnp.float32)
  cand_boxes = cand_boxes.astype(jnp.float32)
  m = cand_masks.shape[-1]
  n = cand_boxes.shape[0]
  iou = box_iou(det_boxes, cand_boxes)                    # [D, N]
  weight = jnp.take(cand_scores.astype(jnp.float32).T, det_labels, axis=0)
  weight = jnp.where((iou >= iou_thr) & cand_valid[None], weight, 0.0)
  w, idx = jax.lax.top_k(weight, min(max_voters, n))     # [D, V]
  voter_boxes = cand_boxes[idx]                           # [D, V, 4]
  voting = w > 0
  big, small = jnp.float32(3e38), jnp.float32(-3e38)
  lo = jnp.minimum(det_boxes[:, :2], jnp.min(jnp.where(
      voting[..., None], voter_boxes[..., :2], big), axis=1))
  hi = jnp.maximum(det_boxes[:, 2:], jnp.max(jnp.where(
      voting[..., None], voter_boxes[..., 2:], small), axis=1))
  frame = jnp.concatenate([lo, hi], axis=-1)              # [D, 4]
  pasted = _resample(cand_masks.astype(jnp.float32)[idx], voter_boxes,
                     jnp.broadcast_to(frame[:, None], voter_boxes.shape),
                     m, inside_only=True)                 # [D, V, M, M]
  votes = (pasted >= mask_thr).astype(jnp.float32)
  norm = jnp.maximum(jnp.sum(w, axis=1), 1e-12)
  merged = jnp.einsum("dv,dvuw->duw", w, votes) / norm[:, None, None]
  tight, found = _tight_box(merged, frame, mask_thr)
  boxes = jnp.where(found[:, None], tight, det_boxes)
  masks = _resample(merged, frame, boxes, m, inside_only=False)
  masks = jnp.where(found[:, None, None], masks, 0.0)
  keep = det_valid[:, None]
  return (jnp.where(keep, boxes, 0.0),
          jnp.where(keep[..., None], masks, 0.0))
