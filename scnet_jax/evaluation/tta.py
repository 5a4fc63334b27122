"""Test-time augmentation for two-stage detectors, as mmdetection 2.x's
`aug_test` (HTC, SCNet; the published TTA columns):

  1. every view (scale, flip) of the image: features and RPN proposals;
     the proposals mapped back to the original image, merged (NMS at the
     RPN's IoU, the best test_post_nms kept; `merge_aug_proposals`);
  2. every view: the merged proposals mapped into it, the box stages ->
     per-class boxes and class scores; mapped back and averaged over the
     views (`merge_aug_bboxes`), then one multiclass NMS;
  3. every view: the detections mapped into it, the mask branch -> 28x28
     probabilities, un-flipped and averaged (`merge_aug_masks`).

Each view is a static-shape program: the image is resized (keep ratio) to
the view's scale and padded to the configured bucket scaled to that view,
so a run compiles three programs per (view canvas) and reuses them for
every image. Config: `test_aug.scales` ((long, short) pairs) and
`test_aug.flip`.
"""
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from scnet_jax import ops
from scnet_jax.data import transforms
from scnet_jax.errors import ConfigError
from scnet_jax.models import build_model, resolve_model
from scnet_jax.models.registry import ROI_HEADS, part_class


def view_buckets(data_cfg, scale):
  """The configured buckets scaled from data.image_scale to `scale` and
  rounded up to multiples of 32: every image resized to `scale` fits one."""
  (base_long, base_short), (long, short) = data_cfg.image_scale, scale
  f = max(long / base_long, short / base_short)
  return [(32 * math.ceil(bh * f / 32), 32 * math.ceil(bw * f / 32))
          for bh, bw in data_cfg.buckets]


def flip_boxes(boxes, width):
  """Horizontal flip of [..., 4] boxes inside an image `width` wide."""
  return np.stack([width - boxes[..., 2], boxes[..., 1],
                   width - boxes[..., 0], boxes[..., 3]], axis=-1)


class View:
  """One (scale, flip) view of one image: where it is on its canvas."""

  def __init__(self, image, scale, flip, data_cfg):
    h, w = image.shape[:2]
    _, canvas, (self.h, self.w) = transforms.resize_and_pad(
        image, scale, view_buckets(data_cfg, scale), data_cfg.resize, flip)
    self.factors = np.array([self.w / w, self.h / h] * 2, np.float32)
    self.flip = flip
    self.canvas = canvas[None]
    self.image_hw = np.array([[self.h, self.w]], np.int32)

  def to_original(self, boxes):
    """[..., 4] boxes of this view -> original-image pixels."""
    boxes = flip_boxes(boxes, self.w) if self.flip else boxes
    return boxes / self.factors

  def from_original(self, boxes):
    boxes = np.asarray(boxes, np.float32) * self.factors
    return flip_boxes(boxes, self.w) if self.flip else boxes


def check_config(config):
  """Refuses a model TTA cannot run: the views merge RPN proposals, so
  two-stage detectors only, whose RoI heads declare TTA."""
  if config.model.type != "two_stage":
    raise ConfigError(f"eval.py --tta: test-time augmentation merges RPN "
                      f"proposals across views, so it needs "
                      f"model.type=two_stage; got {config.model.type!r}")
  heads = resolve_model(config.model).roi_heads
  # A class that does not declare TTA has none.
  if not getattr(part_class(ROI_HEADS, "roi_heads", heads), "TTA", False):
    raise ConfigError(f"eval.py --tta: model.roi_heads.type {heads.type!r} "
                      f"has no test-time augmentation (its predict is not "
                      f"the box and mask steps the views merge)")


class TTAPredictor:
  """image [H, W, 3] uint8 -> detections in original-image pixels: dict of
  boxes [D, 4], scores [D], labels [D], masks [D, 28, 28] (box-relative),
  num_detections."""

  def __init__(self, config, variables):
    check_config(config)
    self.config = config
    model = self.model = build_model(config)
    self.variables = jax.device_put(variables)
    aug = config.test_aug
    self.views = [(tuple(s), f) for s in aug.scales
                  for f in ((False, True) if aug.flip else (False,))]
    rpn = model.cfg.rpn

    # A view's features and RoI-head context are computed once, kept on
    # the device, and fed to its box and mask programs.
    def proposals(m, image, image_hw):
      feats, canvas = m.neck_and_canvas(image, image_hw)
      ctx, _ = m.roi_heads.context_and_losses(feats, canvas)
      return (feats, ctx), m.rpn_head.proposals(feats, canvas)

    def boxes(m, view_feats, rois, image_hw):
      feats, ctx = view_feats
      return m.roi_heads.predict_boxes(feats, rois, image_hw, ctx)

    def masks(m, view_feats, det_boxes, labels):
      feats, ctx = view_feats
      return m.roi_heads.predict_masks(feats, det_boxes, labels, ctx)

    def detect(m, det_boxes, scores, valid):
      return m.roi_heads.detect(det_boxes, scores, valid)

    def merge_proposals(boxes_, scores, valid):
      keep, num = ops.batched_nms(boxes_, scores, jnp.zeros_like(
          scores, jnp.int32), rpn.nms_iou, rpn.test_post_nms, valid=valid)
      return boxes_[jnp.maximum(keep, 0)], jnp.arange(keep.shape[0]) < num

    apply = lambda fn: jax.jit(lambda v, *a: model.apply(v, *a, method=fn))
    self._proposals, self._boxes = apply(proposals), apply(boxes)
    self._masks, self._detect = apply(masks), apply(detect)
    self._merge_proposals = jax.jit(merge_proposals)

  def __call__(self, image):
    v = self.variables
    views = [View(image, s, f, self.config.data) for s, f in self.views]
    feats, props, scores, valid = [], [], [], []
    for view in views:
      f, p = self._proposals(v, view.canvas, view.image_hw)
      feats.append(f)
      props.append(view.to_original(np.asarray(p.boxes[0])))
      scores.append(np.asarray(p.scores[0]))
      valid.append(np.asarray(p.valid[0]))
    rois, rois_valid = self._merge_proposals(
        np.concatenate(props), np.concatenate(scores),
        np.concatenate(valid))
    rois = np.asarray(rois)
    all_boxes, all_scores = [], []
    for view, f in zip(views, feats):
      b, s = self._boxes(v, f, view.from_original(rois)[None],
                         view.image_hw)
      all_boxes.append(view.to_original(np.asarray(b[0])))
      all_scores.append(np.asarray(s[0]))
    dets = jax.device_get(self._detect(
        v, np.mean(all_boxes, axis=0)[None], np.mean(all_scores, axis=0)[None],
        np.asarray(rois_valid)[None]))
    probs = []
    for view, f in zip(views, feats):
      m = np.asarray(self._masks(v, f, view.from_original(dets.boxes[0])[None],
                                 dets.labels)[0])
      probs.append(m[:, :, ::-1] if view.flip else m)
    return {"boxes": dets.boxes[0], "scores": dets.scores[0],
            "labels": dets.labels[0], "masks": np.mean(probs, axis=0),
            "num_detections": dets.num_detections[0],
            "mask_paste": self.config.model.test.mask_paste}


def evaluate_tta(config, variables, *, ann_file, image_dir, output_dir,
                 evaluator="faster_coco_eval", log=print):
  """TTA predictions of every image of the split, scored as an Evaluator
  does; writes output_dir/results.json and metrics.json."""
  import json

  from scnet_jax.data.coco import CocoSource
  from scnet_jax.evaluation.coco_eval import coco_metrics
  from scnet_jax.evaluation.postprocess import image_results
  source = CocoSource(ann_file, image_dir, train=False)
  predictor = TTAPredictor(config, variables)
  cat_ids = np.asarray(source.cat_ids)
  log(f"TTA over {len(predictor.views)} views (scales "
      f"{[list(s) for s in config.test_aug.scales]}, flip "
      f"{config.test_aug.flip}) of {len(source)} images")
  results, t0 = [], time.perf_counter()
  for i, rec in enumerate(source.records):
    det = predictor(source.load_image(rec))
    meta = {"scale": np.ones(2, np.float32),
            "orig_hw": np.array([rec["height"], rec["width"]]),
            "image_id": rec["image_id"]}
    results.extend(image_results(det, meta, cat_ids,
                                 config.model.test.mask_thr))
    if (i + 1) % 50 == 0 or i + 1 == len(source):
      log(f"  {i + 1}/{len(source)} images, "
          f"{(i + 1) / (time.perf_counter() - t0):.2f} images/s")
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "results.json"), "w") as f:
    json.dump(results, f)
  metrics, tables = coco_metrics(ann_file, results, evaluator, log=log)
  log(tables)
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(dict(metrics, views=len(predictor.views)), f, indent=1,
              sort_keys=True)
  return metrics
