"""Box geometry and the DeltaXYWH box coder (mmdetection semantics).

All boxes are (x1, y1, x2, y2) in pixels with no "+1" (mmdet >= 2.0).
Arithmetic is done in float32 whatever the input dtype, so bfloat16
activations never leak into IoU or decoding.
"""
import math

import jax.numpy as jnp

from scnet_jax.ops._checks import check_rank

# mmdet's DeltaXYWHBBoxCoder clamps dw/dh to +-|log(16/1000)|.
MAX_DELTA_LOG = abs(math.log(16.0 / 1000.0))


def box_area(boxes):
  """boxes: [..., 4] -> [...] float32 area (x2 - x1) * (y2 - y1)."""
  boxes = boxes.astype(jnp.float32)
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a, b):
  """Pairwise IoU.

  Args:
    a: [N, 4] boxes.
    b: [M, 4] boxes.
  Returns:
    [N, M] float32 IoU; 0 where the union is empty (degenerate boxes).
  """
  check_rank("box_iou a", a, 2, 4)
  check_rank("box_iou b", b, 2, 4)
  return _pairwise_iou(a, b)


def _pairwise_iou(a, b):
  """Broadcasting IoU: a [..., N, 4], b [..., M, 4] -> [..., N, M]."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  area_a = box_area(a)[..., :, None]
  area_b = box_area(b)[..., None, :]
  lt = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])
  rb = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
  wh = jnp.clip(rb - lt, 0.0)
  inter = wh[..., 0] * wh[..., 1]
  union = area_a + area_b - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


batched_box_iou = _pairwise_iou


def clip_boxes(boxes, image_hw):
  """Clips boxes to [0, W] x [0, H].

  Args:
    boxes: [..., N, 4] boxes.
    image_hw: (H, W), or an array [..., 2] with one size per leading index
      of boxes (e.g. [B, 2] for boxes [B, N, 4]).
  Returns:
    [..., N, 4] float32 clipped boxes.
  """
  boxes = boxes.astype(jnp.float32)
  hw = jnp.asarray(image_hw, jnp.float32)
  h, w = hw[..., 0:1], hw[..., 1:2]
  return jnp.stack([jnp.clip(boxes[..., 0], 0.0, w),
                    jnp.clip(boxes[..., 1], 0.0, h),
                    jnp.clip(boxes[..., 2], 0.0, w),
                    jnp.clip(boxes[..., 3], 0.0, h)], axis=-1)


def encode_deltas(proposals, gt, means=(0., 0., 0., 0.),
                  stds=(1., 1., 1., 1.)):
  """DeltaXYWH encoding of gt relative to proposals.

  Args:
    proposals: [..., 4] boxes.
    gt: [..., 4] boxes, same leading shape.
    means, stds: 4 floats each.
  Returns:
    [..., 4] float32 deltas ((dx, dy, dw, dh) - means) / stds.
  """
  p = proposals.astype(jnp.float32)
  g = gt.astype(jnp.float32)
  pw = p[..., 2] - p[..., 0]
  ph = p[..., 3] - p[..., 1]
  px = (p[..., 0] + p[..., 2]) * 0.5
  py = (p[..., 1] + p[..., 3]) * 0.5
  gw = g[..., 2] - g[..., 0]
  gh = g[..., 3] - g[..., 1]
  gx = (g[..., 0] + g[..., 2]) * 0.5
  gy = (g[..., 1] + g[..., 3]) * 0.5
  deltas = jnp.stack([(gx - px) / pw, (gy - py) / ph,
                      jnp.log(gw / pw), jnp.log(gh / ph)], axis=-1)
  return (deltas - jnp.asarray(means, jnp.float32)) / jnp.asarray(
      stds, jnp.float32)


def decode_deltas(boxes, deltas, means=(0., 0., 0., 0.),
                  stds=(1., 1., 1., 1.), image_hw=None,
                  max_ratio=MAX_DELTA_LOG, clamp="symmetric"):
  """Applies DeltaXYWH deltas to boxes.

  Args:
    boxes: [..., 4] reference boxes.
    deltas: [..., 4] encoded deltas.
    means, stds: 4 floats each.
    image_hw: optional (H, W) or [..., 2] to clip the result to.
    max_ratio: clamp for dw, dh (mmdet: |log(16/1000)|).
    clamp: "symmetric" clamps dw, dh to [-max_ratio, max_ratio] (mmdet);
      "upper" only from above (torchvision's BoxCoder).
  Returns:
    [..., 4] float32 decoded boxes.
  """
  b = boxes.astype(jnp.float32)
  d = deltas.astype(jnp.float32) * jnp.asarray(stds, jnp.float32) + \
      jnp.asarray(means, jnp.float32)
  dx, dy = d[..., 0], d[..., 1]
  if clamp not in ("symmetric", "upper"):
    raise ValueError(f"clamp must be 'symmetric' or 'upper', got {clamp!r}")
  low = -max_ratio if clamp == "symmetric" else None
  dw = jnp.clip(d[..., 2], low, max_ratio)
  dh = jnp.clip(d[..., 3], low, max_ratio)
  pw = b[..., 2] - b[..., 0]
  ph = b[..., 3] - b[..., 1]
  px = (b[..., 0] + b[..., 2]) * 0.5
  py = (b[..., 1] + b[..., 3]) * 0.5
  gw = pw * jnp.exp(dw)
  gh = ph * jnp.exp(dh)
  gx = px + pw * dx
  gy = py + ph * dy
  out = jnp.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5,
                   gy + gh * 0.5], axis=-1)
  if image_hw is not None:
    out = clip_boxes(out, image_hw)
  return out
