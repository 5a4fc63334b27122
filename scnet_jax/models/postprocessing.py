"""Post-processing on the device, shared by every detector (detectron2's
`fast_rcnn_inference`): per-class scores and boxes -> padded Detections."""
import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.models.structures import Detections


def multiclass_nms(boxes, scores, valid, *, score_thr, nms_iou, max_per_img,
                   pre_nms_topk, min_box_size=0.0):
  """Per-class NMS over every (candidate, class) pair, batched.

  Args:
    boxes: [B, P, C, 4] float32 per-class boxes (broadcast a class-agnostic
      [B, P, 1, 4] to C).
    scores: [B, P, C] float32 class probabilities, background dropped.
    valid: [B, P] bool candidates.
    score_thr: candidates need a score above it (strict, as mmdet).
    nms_iou: IoU threshold within a class.
    max_per_img: D, the static number of output rows.
    pre_nms_topk: only the best pre_nms_topk pairs by score enter the NMS;
      exact unless the NMS would have to go past them to find D survivors.
    min_box_size: pairs whose box is narrower or lower are dropped
      (torchvision's remove_small_boxes; 0 in mmdet).
  Returns:
    Detections without masks: boxes [B, D, 4], scores [B, D], labels
    [B, D] int32, num_detections [B] int32; rows past the count are zero.
  """
  def one_image(b, s, v):
    p, nc = s.shape
    flat_scores = s.reshape(-1)
    flat_boxes = jnp.broadcast_to(b, (p, nc, 4)).reshape(-1, 4)
    labels = jnp.tile(jnp.arange(nc, dtype=jnp.int32), p)
    wh = flat_boxes[:, 2:] - flat_boxes[:, :2]
    ok = (flat_scores > score_thr) & jnp.repeat(v, nc) & \
        jnp.all(wh >= min_box_size, axis=-1)
    k = min(pre_nms_topk, p * nc)
    top_scores, idx = jax.lax.top_k(jnp.where(ok, flat_scores, -1.0), k)
    keep, num = ops.batched_nms(flat_boxes[idx], top_scores, labels[idx],
                                nms_iou, max_per_img,
                                valid=top_scores > score_thr)
    sel = idx[jnp.maximum(keep, 0)]
    kept = keep >= 0
    return (jnp.where(kept[:, None], flat_boxes[sel], 0.0),
            jnp.where(kept, flat_scores[sel], 0.0),
            jnp.where(kept, labels[sel], 0), num)

  det_boxes, det_scores, det_labels, num = jax.vmap(one_image)(boxes, scores,
                                                               valid)
  return Detections(boxes=det_boxes, scores=det_scores, labels=det_labels,
                    num_detections=num)
