"""MaxIoU assignment against torchvision's Matcher where the two define the
same thing and against mmdetection's MaxIoUAssigner (anchor inside flags,
padded gts and proposals, R-CNN gt-as-proposals), and the padded
sampler's guarantees."""
import jax
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
  fn = jax.jit(lambda k, l: ops.sample_boxes(k, l, 256, 0.25))
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
  fn = jax.jit(lambda k: ops.sample_boxes(k, label, 8, 0.25)[0][:2])
  for i in range(400):
    counts[np.asarray(fn(jax.random.PRNGKey(i)))] += 1
  # 800 draws over 20 boxes: 40 each; a biased sampler would skew this.
  assert counts.min() > 20 and counts.max() < 62


def test_first_sampler_equals_mmdet_with_first_choice(monkeypatch):
  """sampler="first" against mmdetection's RandomSampler whose
  random_choice takes the first `num` of its gallery: the same positives
  and negatives in the same order, with few and with many candidates."""
  tm, InstanceData = _mmdet()
  monkeypatch.setattr(tm.RandomSampler, "random_choice",
                      lambda self, gallery, num: gallery[:num])
  fn = jax.jit(lambda l: ops.sample_boxes(None, l, 64, 0.25, "first"))
  rng = np.random.default_rng(2)
  for n, p in ((40, (0.2, 0.5, 0.3)), (1000, (0.2, 0.7, 0.1))):
    label = rng.choice([-1, 0, 1], size=n, p=p).astype(np.int32)
    gt_inds = torch.from_numpy(np.where(label == 1, 1, label))
    result = tm.AssignResult(1, gt_inds, torch.ones(n),
                             torch.zeros(n, dtype=torch.long))
    sampler = tm.RandomSampler(num=64, pos_fraction=0.25,
                               add_gt_as_proposals=False)
    boxes = torch.from_numpy(_boxes(rng, n))
    res = sampler.sample(result, InstanceData(priors=boxes), InstanceData(
        bboxes=boxes[:1], labels=torch.zeros(1, dtype=torch.long)))
    idx, valid, is_pos, num_pos = map(np.asarray, fn(label))
    assert int(num_pos) == len(res.pos_inds)
    np.testing.assert_array_equal(idx[is_pos], res.pos_inds.numpy())
    np.testing.assert_array_equal(idx[valid & ~is_pos], res.neg_inds.numpy())


# --------------------------------------------- mmdetection's MaxIoUAssigner
# mmdet 3.3 (tests/mmdet_reference.py) on the same inputs. Its anchor heads
# hand the assigner only the anchors inside the allowed border
# (AnchorHead._get_targets_single: `anchors = flat_anchors[inside_flags]`);
# its R-CNN heads hand it the image's proposals, and the sampler prepends
# the ground truth afterwards (RandomSampler.sample -> add_gt_).

def _mmdet():
  from tests.mmdet_reference import mmdet_import
  tm = mmdet_import("mmdet.models.task_modules")
  InstanceData = mmdet_import("mmengine.structures").InstanceData
  return tm, InstanceData


def _mmdet_gt_inds(boxes, gt, cfg, sampler=None):
  """mmdet's AssignResult.gt_inds (-1 ignore, 0 negative, i + 1 gt i) of
  the boxes against the (unpadded) gt, after the sampler when given."""
  tm, InstanceData = _mmdet()
  pos, neg, min_pos, low_quality = cfg
  assigner = tm.MaxIoUAssigner(pos_iou_thr=pos, neg_iou_thr=neg,
                               min_pos_iou=min_pos,
                               match_low_quality=low_quality)
  pred = InstanceData(priors=torch.from_numpy(boxes))
  gts = InstanceData(bboxes=torch.from_numpy(gt),
                     labels=torch.zeros(len(gt), dtype=torch.long))
  result = assigner.assign(pred, gts)
  if sampler is not None:
    sampler.sample(result, pred, gts)  # prepends the gt (add_gt_)
  return result.gt_inds.numpy()


def _ours_as_gt_inds(label, gt_index, gt_valid):
  """Our (label, padded gt_index) in mmdet's gt_inds encoding, gt indices
  counted among the valid gts only."""
  label, gt_index = np.asarray(label), np.asarray(gt_index)
  compact = np.cumsum(gt_valid) - 1
  pos = label == 1
  assert gt_valid[gt_index[pos]].all()  # never a padding row
  out = np.where(label == 0, 0, -1)
  out[pos] = compact[gt_index[pos]] + 1
  return out


def _padded_gt(rng, gt, num_pad):
  """gt rows with `num_pad` padding rows at random places; the padding
  holds random boxes, so a padding row that leaked into any max would
  show."""
  n = len(gt) + num_pad
  valid = np.zeros(n, bool)
  valid[rng.choice(n, len(gt), replace=False)] = True
  padded = _boxes(rng, n)
  padded[valid] = gt
  return padded, valid


_assign = jax.jit(ops.max_iou_assign, static_argnums=(3, 4, 5, 6))

RPN = (0.7, 0.3, 0.3, True)  # SCNet/HTC rpn assigner
CONFIGS = [RPN, (0.5, 0.5, 0.5, True), (0.6, 0.6, 0.6, False),
           (0.7, 0.3, 0.0, True), (0.5, 0.4, 0.0, True)]


def test_border_gt_gets_its_best_inside_anchor_as_mmdet():
  """The issue's case: the anchor with a gt's best IoU sticks out of the
  image, so mmdet never sees it; the gt's best inside anchor becomes a
  low-quality positive."""
  tm, _ = _mmdet()
  image_hw = np.array([[100, 100]])
  gt = np.array([[0, 40, 24, 64], [60, 10, 90, 45]], np.float32)
  anchors = np.array([[-4, 40, 20, 64],    # outside, gt 0's best
                      [4, 36, 32, 68],     # inside, IoU 0.48 with gt 0
                      [20, 80, 60, 120],   # outside, below the image
                      [58, 8, 92, 50],     # inside, gt 1 above pos_iou_thr
                      [30, 0, 50, 20]], np.float32)
  inside = np.asarray(ops.inside_flags(anchors, np.ones((1, 5), bool),
                                       image_hw, 0))[0]
  ref_inside = tm.prior_generators.anchor_inside_flags(
      torch.from_numpy(anchors), torch.ones(5, dtype=torch.bool),
      (100, 100), 0).numpy()
  np.testing.assert_array_equal(inside, ref_inside)
  iou = np.asarray(ops.box_iou(gt, anchors))
  # The premise: gt 0's best anchor overall is outside, and its best
  # inside anchor is between min_pos_iou and pos_iou_thr.
  assert not inside[np.argmax(iou[0])]
  best_inside = np.max(np.where(inside, iou[0], -1))
  assert RPN[2] <= best_inside < RPN[0]

  ref = _mmdet_gt_inds(anchors[inside], gt, RPN)
  assert (ref == 1).any()  # mmdet does give gt 0 a positive
  label, gt_index, _ = _assign(anchors, gt, np.ones(2, bool), *RPN, inside)
  ours = _ours_as_gt_inds(label, gt_index, np.ones(2, bool))
  np.testing.assert_array_equal(ours[inside], ref)
  np.testing.assert_array_equal(ours[~inside], -1)


def test_random_inside_flags_and_padded_gt_match_mmdet():
  rng = np.random.default_rng(3)
  checked = 0
  for trial in range(24):
    cfg = CONFIGS[trial % len(CONFIGS)]
    gt = _boxes(rng, int(rng.integers(1, 9)))
    gt_padded, gt_valid = _padded_gt(rng, gt, int(rng.integers(0, 5)))
    boxes = _boxes(rng, 300)
    inside = rng.random(300) < rng.uniform(0.3, 0.9)
    label, gt_index, _ = _assign(boxes, gt_padded, gt_valid, *cfg, inside)
    ours = _ours_as_gt_inds(label, gt_index, gt_valid)
    ref = _mmdet_gt_inds(boxes[inside], gt, cfg)
    np.testing.assert_array_equal(ours[inside], ref, err_msg=str(cfg))
    np.testing.assert_array_equal(ours[~inside], -1)
    iou = np.asarray(ops.box_iou(gt, boxes))
    checked += int(np.any(~inside[np.argmax(iou, axis=1)]))
  # Some gt's best box was an excluded one in many trials.
  assert checked >= 8


def test_no_valid_gt_or_no_gt_rows_match_mmdet():
  rng = np.random.default_rng(4)
  boxes = _boxes(rng, 50)
  inside = rng.random(50) < 0.5
  for cfg in CONFIGS:
    ref = _mmdet_gt_inds(boxes[inside], np.zeros((0, 4), np.float32), cfg)
    for g in (0, 3):
      label, gt_index, _ = _assign(boxes, _boxes(rng, g), np.zeros(g, bool),
                                   *cfg, inside)
      ours = _ours_as_gt_inds(label, gt_index, np.zeros(g, bool))
      np.testing.assert_array_equal(ours[inside], ref)


def test_gt_overlapping_no_inside_box_with_min_pos_iou_zero_as_mmdet():
  """min_pos_iou=0: a gt whose best inside IoU is 0 takes every inside box
  of IoU 0 with it (mmdet's `gt_max_overlaps[i] >= min_pos_iou`)."""
  rng = np.random.default_rng(7)
  gt = np.concatenate([_boxes(rng, 3), [[500, 500, 520, 520]]]).astype(
      np.float32)
  boxes = np.concatenate([_boxes(rng, 60), [[495, 495, 525, 525]]]).astype(
      np.float32)
  inside = np.arange(61) < 60  # the one box touching gt 3 is outside
  assert not np.asarray(ops.box_iou(gt[3:], boxes[inside])).any()
  for cfg in [(0.7, 0.3, 0.0, True), (0.5, 0.4, 0.0, True)]:
    label, gt_index, _ = _assign(boxes, gt, np.ones(4, bool), *cfg, inside)
    ours = _ours_as_gt_inds(label, gt_index, np.ones(4, bool))
    np.testing.assert_array_equal(ours[inside],
                                  _mmdet_gt_inds(boxes[inside], gt, cfg))


def test_grid_anchors_at_the_image_border_match_mmdet():
  """Real anchors (two FPN levels) on an image smaller than the padded
  canvas, gts touching its borders: inside flags and assignment."""
  tm, _ = _mmdet()
  rng = np.random.default_rng(5)
  canvas, image_hw = (128, 160), np.array([[100, 150]])
  anchors, valid = [], []
  for stride in (8, 16):
    hw = (canvas[0] // stride, canvas[1] // stride)
    anchors.append(ops.grid_anchors(hw, stride))
    valid.append(np.asarray(ops.valid_flags(hw, stride, 3, image_hw)))
  anchors = np.concatenate(anchors)
  valid = np.concatenate(valid, axis=1)
  inside = np.asarray(ops.inside_flags(anchors, valid, image_hw, 0))[0]
  ref_inside = tm.prior_generators.anchor_inside_flags(
      torch.from_numpy(anchors), torch.from_numpy(valid[0]), (100, 150),
      0).numpy()
  np.testing.assert_array_equal(inside, ref_inside)
  for trial in range(6):
    n = int(rng.integers(2, 7))
    x1 = rng.uniform(0, 120, n)
    y1 = rng.uniform(0, 70, n)
    w = rng.uniform(8, 60, n)
    h = rng.uniform(8, 60, n)
    gt = np.stack([x1, y1, np.minimum(x1 + w, 150), np.minimum(y1 + h, 100)],
                  1).astype(np.float32)
    gt[:, 0][rng.random(n) < 0.5] = 0.0  # on the left border
    gt_padded, gt_valid = _padded_gt(rng, gt, 2)
    label, gt_index, _ = _assign(anchors, gt_padded, gt_valid, *RPN, inside)
    ours = _ours_as_gt_inds(label, gt_index, gt_valid)
    ref = _mmdet_gt_inds(anchors[inside], gt, RPN)
    np.testing.assert_array_equal(ours[inside], ref)
    np.testing.assert_array_equal(ours[~inside], -1)


def test_rcnn_assignment_with_gt_as_proposals_matches_mmdet():
  """R-CNN: padded proposals (invalid rows random boxes), duplicate gts and
  proposals equal to a gt; the gt rows prepended after assignment."""
  from scnet_jax.models.roi_heads.sampling import assign_candidates
  tm, _ = _mmdet()
  rng = np.random.default_rng(6)
  for trial in range(12):
    iou_thr, low_quality = [(0.5, True), (0.6, True), (0.7, False)][
        trial % 3]
    gt = _boxes(rng, int(rng.integers(1, 7)))
    gt = np.concatenate([gt, gt[:1]])  # a duplicate gt
    props = _boxes(rng, 120)
    props[:3] = gt[rng.integers(0, len(gt), 3)]
    cand_valid = rng.random(120) < 0.8
    gt_padded, gt_valid = _padded_gt(rng, gt, 3)
    boxes, label, gt_index = jax.jit(
        assign_candidates, static_argnames=(
            "iou_thr", "match_low_quality", "add_gt_as_proposals"))(
                props, cand_valid, gt_padded, gt_valid, iou_thr=iou_thr,
                match_low_quality=low_quality, add_gt_as_proposals=True)
    rows = np.concatenate([gt_valid, cand_valid])
    np.testing.assert_array_equal(np.asarray(boxes)[rows],
                                  np.concatenate([gt, props[cand_valid]]))
    ours = _ours_as_gt_inds(label, gt_index, gt_valid)
    sampler = tm.RandomSampler(num=512, pos_fraction=0.25,
                               add_gt_as_proposals=True)
    ref = _mmdet_gt_inds(props[cand_valid], gt,
                         (iou_thr, iou_thr, iou_thr, low_quality), sampler)
    np.testing.assert_array_equal(ours[rows], ref)
    np.testing.assert_array_equal(ours[~rows], -1)
