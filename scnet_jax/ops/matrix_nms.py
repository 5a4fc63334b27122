"""Matrix NMS (SOLOv2; mmdet's `mask_matrix_nms`) with static shapes.

Every candidate's score is decayed by its most overlapping higher-scored
mask of the same class, compensated by how much that mask was itself
overlapped; all in one K x K matrix, no sequential loop.
"""
import jax
import jax.numpy as jnp

KERNELS = ("gaussian", "linear")


def matrix_nms(masks, labels, scores, valid, areas, *, kernel="gaussian",
               sigma=2.0, filter_thr=-1.0, max_num=-1):
  """Matrix NMS of one image's K candidates, already in decreasing score
  order (mmdet sorts them and keeps `nms_pre` first: the caller's top-K).

  Args:
    masks: [K, P] float32 binary masks, flattened.
    labels: [K] int32; scores: [K] float32 (decreasing over valid rows);
    valid: [K] bool (padding rows last); areas: [K] float32 mask sums.
    kernel: 'gaussian' or 'linear'; sigma: the gaussian's.
    filter_thr: decayed scores below it are dropped (<= 0: none dropped).
    max_num: static number of rows returned (<= 0: K).
  Returns:
    (scores [M], labels [M], index [M] int32 into the K candidates, valid
    [M] bool) in decreasing decayed-score order; invalid rows zero.
  """
  k = masks.shape[0]
  inter = masks @ masks.T
  union = areas[:, None] + areas[None, :] - inter
  upper = jnp.triu(jnp.ones((k, k), bool), 1)
  pair = upper & valid[:, None] & valid[None, :]
  iou = jnp.where(pair & (union > 0), inter / jnp.where(union > 0, union, 1),
                  0.0)
  decay_iou = jnp.where(labels[:, None] == labels[None, :], iou, 0.0)
  # compensate[i]: how much candidate i was itself overlapped.
  compensate = jnp.max(decay_iou, axis=0)[:, None]
  if kernel == "gaussian":
    ratio = jnp.exp(-sigma * decay_iou ** 2) / jnp.exp(-sigma *
                                                       compensate ** 2)
  elif kernel == "linear":
    ratio = (1.0 - decay_iou) / (1.0 - compensate)
  else:
    raise ValueError(f"kernel: one of {KERNELS}, got {kernel!r}")
  decayed = scores * jnp.min(ratio, axis=0)
  keep = valid & (decayed >= filter_thr if filter_thr > 0 else True)
  m = k if max_num <= 0 else min(max_num, k)
  top, index = jax.lax.top_k(jnp.where(keep, decayed, -1.0), m)
  kept = jnp.take(keep, index)
  return (jnp.where(kept, top, 0.0),
          jnp.where(kept, jnp.take(labels, index), 0),
          jnp.where(kept, index, 0).astype(jnp.int32), kept)
