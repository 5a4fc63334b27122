"""Against mmdetection 3.3 itself: its SCNet, HTC, Cascade Mask R-CNN and
Mask R-CNN R-50-FPN (built from the configs it ships, random weights made
well-conditioned, tests/mmdet_models.py), our model converted from the
same state dict.

Inference (`test_equals_mmdetection`), with the default config: one real
photograph that needs resizing and padding.
The photograph is skimage's 300 x 451 cat. Each side preprocesses it
itself: mmdetection with its config's test pipeline (Resize keeping the
ratio, here into 384 x 256 instead of 1333 x 800: 255 x 384, padded to
256 x 384), we as the Predictor does (`transforms.resize_and_pad`, the
default data.resize="cv2", into a 320 x 448 bucket). (COCO's 800-pixel
side checks nothing more and costs several times the time.) Checked: FPN levels on
the canvas, the RPN's objectness, the proposals, and the final top-100
detections in the original image, ours brought there as the Predictor
brings them (box IoU > 0.99, same label, score within 1e-3; mask IoU >
0.95).

Training (`test_training_equals_mmdetection`), with mmdetection 3.3's
rules selected: one batch's losses (relative 1e-4; the box stages run on
mmdetection's proposals), gradients after the backbone (1e-2 per part)
and proposals (tests/mmdet_training.py).
"""
import functools

import jax
import numpy as np
import pytest
import torch

from scnet_jax import ops
from scnet_jax.data import transforms
from scnet_jax.evaluation.postprocess import (detections_in_image,
                                              image_detections)
from tests.mmdet_models import (CONFIGS, SCALE, our_model, photograph,
                                reference, rel)
from tests import mmdet_training
from tests.xla_flags import RUN

BUCKET = (320, 448)
# What mmdetection 3.3 does differently from the mmdet 2.x behaviour our
# defaults follow (documented switches, not caps).
MMDET_33 = {"htc": (("roi_heads.test_mask_merge", "last_stage"),)}


def _batch(c):
  """Our batch of the photograph, prepared as the Predictor prepares it,
  and (sx, sy) its resize factors."""
  image = photograph()
  _, canvas, (h, w) = transforms.resize_and_pad(
      image, c.data.image_scale, [BUCKET], c.data.resize)
  return ({"image": canvas[None], "image_hw": np.array([[h, w]], np.int32)},
          (w / image.shape[1], h / image.shape[0]))


def _nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy()


def run_reference(family):
  """mmdet's intermediates and detections: dict of numpy arrays."""
  model, inputs, samples, _ = reference(family)
  with torch.no_grad():
    x = model.extract_feat(inputs)
    rpn_out = model.rpn_head(x)
    proposals = model.rpn_head.predict(x, samples, rescale=False)
    result = model.predict(inputs, samples, rescale=True)[0]
  det = result.pred_instances
  return {"fpn": [_nhwc(f) for f in x],
          "rpn_cls": [_nhwc(f) for f in rpn_out[0]],
          "proposals": proposals[0].bboxes.numpy(),
          "proposal_scores": proposals[0].scores.numpy(),
          "boxes": det.bboxes.numpy(), "scores": det.scores.numpy(),
          "labels": det.labels.numpy(), "masks": det.masks.numpy()}


def run_ours(family):
  _, _, _, state = reference(family)
  c, model, variables = our_model(family, state, MMDET_33.get(family, ()))
  c.data.update(image_scale=SCALE, buckets=(BUCKET,))
  batch, scale = _batch(c)

  @functools.partial(jax.jit, compiler_options=RUN)
  def predict(v, b):
    return model.apply(v, b, method=model.predict, mutable=["intermediates"])

  dets, inter = predict(variables, batch)
  final = detections_in_image(
      image_detections(jax.device_get(dets), 0), scale,
      photograph().shape[:2], c.model.test.score_thr, c.model.test.mask_thr)
  return final, inter["intermediates"]


def _box_iou(a, b):
  return np.asarray(ops.box_iou(np.asarray(a, np.float32),
                                np.asarray(b, np.float32)))


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_equals_mmdetection(family):
  ref = run_reference(family)
  final, inter = run_ours(family)
  # FPN levels on the canvas (800 / stride), zero beyond it.
  for ours, theirs in zip(inter["fpn"][0], ref["fpn"]):
    h, w = theirs.shape[1:3]
    assert rel(ours[:, :h, :w], theirs) < 1e-3
  # RPN objectness, ours flat over the bucket as (y * W + x) * A + a.
  for (lg, _), theirs, f in zip(inter["rpn"][0], ref["rpn_cls"],
                                inter["fpn"][0]):
    bh, bw = f.shape[1:3]
    h, w, a = theirs.shape[1:]
    ours = np.asarray(lg).reshape(bh, bw, a)[:h, :w]
    assert rel(ours, theirs[0]) < 1e-3
  # Proposals: every mmdet proposal is one of ours, scores within 1e-3.
  boxes, valid = (np.asarray(x[0]) for x in inter["proposals"][0])
  ours = boxes[valid]
  assert len(ours) == len(ref["proposals"])
  iou = _box_iou(ref["proposals"], ours)
  assert np.mean(iou.max(axis=1) > 0.99) > 0.995
  # Final detections in the original image, matched greedily in mmdet's
  # score order.
  o_boxes, o_scores, o_labels, o_masks = (
      final[k] for k in ("boxes", "scores", "labels", "masks"))
  n = len(o_scores)
  assert abs(n - len(ref["scores"])) <= 2
  iou = _box_iou(ref["boxes"], o_boxes)
  # A detection tied with the 100th within float noise may be either's.
  cut = ref["scores"][-1] + 1e-3 if len(ref["scores"]) >= 100 else -1.0
  used, missed = set(), []
  for i in range(len(ref["scores"])):
    ok = [j for j in np.argsort(-iou[i]) if j not in used and
          iou[i, j] > 0.99 and o_labels[j] == ref["labels"][i] and
          abs(o_scores[j] - ref["scores"][i]) < 1e-3]
    if not ok:
      if ref["scores"][i] > cut:
        missed.append(i)
      continue
    j = ok[0]
    used.add(j)
    inter_px = np.logical_and(o_masks[j], ref["masks"][i]).sum()
    union = np.logical_or(o_masks[j], ref["masks"][i]).sum()
    # A mask of a few pixels loses 0.95 to one pixel whose probability sits
    # at the threshold within float noise (seen on an AMD EPYC for a 13-px
    # mask, 12/13, not on a Xeon): there one differing pixel is allowed.
    assert (union - inter_px <= 1 if union < 20 else
            inter_px / union > 0.95), (i, inter_px, union)
  assert not missed, f"{len(missed)} of mmdet's detections unmatched"


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_training_equals_mmdetection(family):
  """Losses, gradients, proposals and the first SGD step of one training
  batch (tests/mmdet_training.py says which and how)."""
  ref_terms, ref_grads, ref_props, ref_deltas = mmdet_training.run_mmdet(
      family)
  ours = mmdet_training.run_ours(family, ref_props)
  # The RPN's proposals, as a set. Their best objectness is 1.0 in float32
  # on both sides (these weights were conditioned on a larger view of the
  # cat), so ties reorder a few of NMS's choices: 6 of 300 boxes differ.
  props = ours.proposals
  assert len(props) == len(ref_props)
  iou = np.asarray(ops.box_iou(ref_props, props))
  assert np.mean(iou.max(axis=1) > 0.99) > 0.97
  # Every loss term.
  assert sorted(ours.terms) == sorted(ref_terms)
  worst = {k: abs(v - ref_terms[k]) / max(abs(ref_terms[k]), 1e-6)
           for k, v in ours.terms.items()}
  print(family, "losses", {k: f"{v:.1e}" for k, v in worst.items()})
  assert max(worst.values()) < 1e-4, worst
  # Gradients, then one SGD step with the warm-up's first rate, per part.
  deltas = mmdet_training.our_sgd_step(ours.config, ours.variables,
                                       ours.grads)
  for name, tree, ref in (("gradients", ours.grads, ref_grads),
                          ("SGD step", deltas, ref_deltas)):
    groups = mmdet_training.part_groups(reference(family)[3], tree, ref,
                                        ours.variables)
    errors = {g: rel(a, b) for g, (a, b) in groups.items()}
    print(family, name, {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(np.abs(b).max() > 0 for _, b in groups.values()), name
    assert max(errors.values()) < 1e-2, (name, errors)
