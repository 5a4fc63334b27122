"""Element-wise losses and the cross-device normaliser.

Losses are float32 whatever the compute dtype. Every mean is a sum divided
by a count that is averaged over the data-parallel axis, so the loss (and
gradient) of a global batch is the same however it is split over devices.
(mmdet normalises per GPU; with 2 images per GPU this differs only when
images hold different numbers of positives.)
"""
import jax
import jax.numpy as jnp


def sigmoid_bce(logits, targets):
  """[...] logits, [...] {0,1} targets -> [...] float32 BCE-with-logits."""
  x = logits.astype(jnp.float32)
  t = targets.astype(jnp.float32)
  return jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))


def softmax_ce(logits, labels):
  """[..., K] logits, [...] int labels -> [...] float32 cross entropy."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32),
                              axis=-1)[..., 0]


def smooth_l1(diff, beta):
  """[...] -> [...] SmoothL1 (Huber / beta) as mmdet's SmoothL1Loss;
  beta <= 0 is its limit, mmdet's L1Loss."""
  d = jnp.abs(diff.astype(jnp.float32))
  if beta <= 0:
    return d
  return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def normalizer(count, axis_name=None):
  """A loss denominator: `count` averaged over devices, at least 1."""
  count = jnp.asarray(count, jnp.float32)
  if axis_name is not None:
    count = jax.lax.pmean(count, axis_name)
  return jnp.maximum(count, 1.0)


def semantic_ce(logits, gt, ignore_label, axis_name=None,
                avg_non_ignore=True):
  """Per-pixel softmax CE over the pixels whose label is not ignore_label,
  divided by their count (avg_non_ignore, mmdetection 2.x's semantic
  loss, how HTC and SCNet were trained) or by every pixel of the map, the
  ignored ones and the bucket's padding included (mmdetection 3.x's
  CrossEntropyLoss default, avg_non_ignore=False).

  logits: [B, H, W, K]; gt: [B, H, W] integer labels -> float32 scalar.
  """
  gt = gt.astype(jnp.int32)
  keep = gt != ignore_label
  ce = softmax_ce(logits, jnp.where(keep, gt, 0))
  norm = normalizer(jnp.sum(keep) if avg_non_ignore else gt.size, axis_name)
  return jnp.sum(jnp.where(keep, ce, 0.0)) / norm


def iou_loss(pred, target, floor=0.1, eps=1e-6):
  """-log IoU of aligned boxes, as CoMask's IoULoss: IoU clamped to eps,
  and an IoU at or below `floor` taken as floor + IoU, which bounds the
  loss by -log(floor) and keeps its gradient finite for disjoint boxes.

  pred, target: [..., 4] (x1, y1, x2, y2) -> [...] float32.
  """
  p = pred.astype(jnp.float32)
  t = target.astype(jnp.float32)
  iw = jnp.maximum(jnp.minimum(p[..., 2], t[..., 2]) -
                   jnp.maximum(p[..., 0], t[..., 0]), 0.0)
  ih = jnp.maximum(jnp.minimum(p[..., 3], t[..., 3]) -
                   jnp.maximum(p[..., 1], t[..., 1]), 0.0)
  inter = iw * ih
  area = lambda b: jnp.maximum(b[..., 2] - b[..., 0], 0.0) * \
      jnp.maximum(b[..., 3] - b[..., 1], 0.0)
  union = jnp.maximum(area(p) + area(t) - inter, eps)
  iou = jnp.maximum(inter / union, eps)
  iou = jnp.where(iou > floor, iou, floor + iou)
  return -jnp.log(iou)


def sigmoid_focal(logits, targets, gamma=2.0, alpha=0.25):
  """[...] logits, [...] {0,1} targets -> [...] float32 focal loss
  (Lin et al.; mmdet's FocalLoss with use_sigmoid, torchvision's
  sigmoid_focal_loss): BCE x (alpha_t (1 - p_t)^gamma)."""
  x = logits.astype(jnp.float32)
  t = targets.astype(jnp.float32)
  p = jax.nn.sigmoid(x)
  pt = (1.0 - p) * t + p * (1.0 - t)
  weight = (alpha * t + (1.0 - alpha) * (1.0 - t)) * pt ** gamma
  return sigmoid_bce(x, t) * weight


def dice(logits, targets, where=None, eps=1e-3):
  """mmdet's DiceLoss (use_sigmoid, naive_dice=False, the V-Net form):
  1 - 2 sum(p t) / (sum(p^2) + eps + sum(t^2) + eps), p = sigmoid(logits).

  logits, targets: [N, ...]; where: optional [N, ...] bool, the elements
  that count (the rest are neither prediction nor target) -> [N] float32.
  """
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  t = targets.astype(jnp.float32)
  if where is not None:
    p = jnp.where(where, p, 0.0)
    t = jnp.where(where, t, 0.0)
  axes = tuple(range(1, p.ndim))
  a = jnp.sum(p * t, axes)
  b = jnp.sum(p * p, axes) + eps
  c = jnp.sum(t * t, axes) + eps
  return 1.0 - 2.0 * a / (b + c)


def merge_losses(*parts):
  """One dict of named losses from the dicts of the parts that computed
  them; a name two parts both return is an error (ValueError), not an
  overwrite."""
  merged = {}
  for part in parts:
    clash = set(merged) & set(part)
    if clash:
      raise ValueError(f"loss names returned twice: {sorted(clash)}")
    merged.update(part)
  return merged
