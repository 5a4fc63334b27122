"""CoMask (roi_heads/comask.py, comask_head.py, ops/ratio_roi_align.py):
the collaborative head's parameters by hand from the layer list, the IoU
loss against torchvision, the level rule on hand cases, gradient flow as
the design says, and one jitted train step and inference call."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from scnet_jax import config_lib
from scnet_jax.errors import ConfigError
from scnet_jax.models import build_model
from scnet_jax.models.losses import iou_loss
from scnet_jax.models.roi_heads.deform_roi_pool_pack import DeformRoIPoolPack
from scnet_jax.ops.ratio_roi_align import ratio_roi_levels
from scnet_jax.summary import part_counts
from tests.helpers import (grad_max, jit_train_and_predict, losses_fn,
                           term_grads, tiny_config)


def test_collaborative_head_count_by_hand():
  C, N, FC = 256, 80, 1024
  trunk = 10 * (9 * C * C + 2 * C)              # 10 convs, no bias, + GN
  reg = 9 * C * 4 + 4                           # conv3x3 -> 4
  deconvs = 2 * (4 * C * C + C + 2 * C)         # 2 deconv2x2 + GN
  instance = 9 * C * N + N                      # conv3x3 -> classes
  iou_convs = (9 * (C + 1) * C + C + 2 * C) + (9 * C * C + C + 2 * C)
  iou_fcs = (49 * C * FC + FC) + (FC * FC + FC) + (FC * N + N)
  expected = trunk + reg + deconvs + instance + iou_convs + iou_fcs
  counts = part_counts(config_lib.get_base("comask"))
  assert counts["roi_heads/comask_head"] == expected == 21_783_972
  # Classification-only box head: 2 shared FCs and fc_cls, no fc_reg.
  assert counts["roi_heads/bbox_head_0"] == (49 * C * FC + FC) + \
      (FC * FC + FC) + (FC * (N + 1) + N + 1)


def test_iou_loss_matches_torchvision():
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 50, (200, 2))
  wh = rng.uniform(5, 40, (200, 2))
  target = np.concatenate([xy, xy + wh], 1).astype(np.float32)
  # Boxes inside their target: the enclosing box is the union, so GIoU is
  # IoU and torchvision's generalized_box_iou_loss is 1 - IoU.
  shrink = rng.uniform(0.4, 1.0, (200, 2))
  inner_wh = wh * shrink
  inner_xy = xy + (wh - inner_wh) * rng.uniform(0, 1, (200, 2))
  inner = np.concatenate([inner_xy, inner_xy + inner_wh], 1).astype(
      np.float32)
  giou = torchvision.ops.generalized_box_iou_loss(
      torch.from_numpy(inner), torch.from_numpy(target)).numpy()
  iou = 1.0 - giou
  assert iou.min() > 0.1
  np.testing.assert_allclose(np.asarray(iou_loss(inner, target)),
                             -np.log(iou), rtol=1e-5, atol=1e-6)
  # Any overlapping pair above the floor: -log of torchvision's box_iou.
  moved = target + rng.uniform(-4, 4, (200, 4)).astype(np.float32)
  ref = torchvision.ops.box_iou(torch.from_numpy(moved),
                                torch.from_numpy(target)).diagonal().numpy()
  ours = np.asarray(iou_loss(moved, target))
  sel = ref > 0.1
  np.testing.assert_allclose(ours[sel], -np.log(ref[sel]), rtol=1e-5)
  # Hand cases below the floor: disjoint (IoU 0 -> eps) and IoU 1/19.
  a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
  b = np.array([[20, 20, 30, 30], [9, 0, 19, 10]], np.float32)
  np.testing.assert_allclose(np.asarray(iou_loss(a, b)),
                             [-np.log(0.1 + 1e-6), -np.log(0.1 + 1 / 19)],
                             rtol=1e-5)


def test_ratio_levels_hand_cases():
  # ceil(3 - log2(image_area / box_area)), clamped to [0, 3].
  hw = np.array([[800, 1344]], np.int32)
  area = 800 * 1344
  side = lambda frac: np.sqrt(area * frac)
  boxes = np.array([[[0, 0, side(f), side(f)] for f in
                     (1.0, 0.5, 0.25, 0.2, 0.125, 0.01)]], np.float32)
  np.testing.assert_array_equal(
      np.asarray(ratio_roi_levels(boxes, hw, 4)), [[3, 2, 1, 1, 0, 0]])


def test_train_step_and_inference_compile_once():
  config = tiny_config("comask")
  losses, out = jit_train_and_predict(config)
  assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls",
                         "loss_reg", "loss_mask", "loss_mask_iou"}
  d = config.model.test.max_per_img
  assert out.boxes.shape == (2, d, 4) and out.mask_scores.shape == (2, d)
  assert out.masks.shape == (2, d, 28, 28) and out.mask_kind == "box"
  boxes = np.asarray(out.boxes)
  assert boxes.min() >= 0 and boxes.max() <= 128


MASK_LAYERS = ("roi_heads/comask_head/deconv1", "roi_heads/comask_head/norm1",
               "roi_heads/comask_head/deconv2", "roi_heads/comask_head/norm2",
               "roi_heads/comask_head/instance")
IOU_LAYERS = ("roi_heads/comask_head/iou_convs",
              "roi_heads/comask_head/iou_fcs", "roi_heads/comask_head/fc_iou")


TERMS = ("loss_reg", "loss_mask", "loss_mask_iou", "loss_cls")


def test_gradients_follow_the_design():
  config = tiny_config("comask")
  losses_of, params, _ = losses_fn(config)
  last = ("roi_heads/comask_head/"
          f"convs_{config.model.roi_heads.reg_num_convs - 1}")
  rows = term_grads(losses_of, params, TERMS)
  g = rows["loss_reg"]
  assert grad_max(g, "roi_heads/comask_head/reg") > 0
  assert grad_max(g, "roi_heads/comask_head/convs_0") > 0
  # The mask weights the cells but is detached: no box gradient into it.
  for layer in MASK_LAYERS + IOU_LAYERS + ("roi_heads/bbox_head_0",):
    assert grad_max(g, layer) == 0, layer
  g = rows["loss_mask"]
  assert grad_max(g, "roi_heads/comask_head/instance") > 0
  assert grad_max(g, last) > 0
  for layer in IOU_LAYERS + ("roi_heads/comask_head/reg",):
    assert grad_max(g, layer) == 0, layer
  # The mask-IoU branch reads the trunk, and the mask only detached.
  g = rows["loss_mask_iou"]
  assert grad_max(g, "roi_heads/comask_head/fc_iou") > 0
  assert grad_max(g, last) > 0
  for layer in MASK_LAYERS + ("roi_heads/comask_head/reg",):
    assert grad_max(g, layer) == 0, layer
  g = rows["loss_cls"]
  assert grad_max(g, "roi_heads/bbox_head_0") > 0
  assert grad_max(g, "roi_heads/comask_head") == 0


def test_collaborative_switch_changes_only_the_weights():
  key = "model.roi_heads.collaborative"
  on, params, _ = losses_fn(tiny_config("comask", **{key: True}))
  off, _, _ = losses_fn(tiny_config("comask", **{key: False}))
  a, b = jax.jit(on)(params), jax.jit(off)(params)
  for name in ("loss_cls", "loss_mask", "loss_mask_iou"):
    np.testing.assert_allclose(float(a[name]), float(b[name]), rtol=1e-6)
  # Weights in [0, 1]: the weighted loss is below the unweighted one.
  assert float(a["loss_reg"]) < float(b["loss_reg"])


def _authors_reg_reduction(loss, weight):
  """The authors' IoULoss reduction (mmdet 1.x weight_reduce_loss, mean):
  the loss as bbox_overlaps(is_aligned=True) returns it, [N * 49], times
  the weight as SID.py passes it, reg_weights.reshape(-1, 1)."""
  loss = torch.from_numpy(loss.reshape(-1))
  weight = torch.from_numpy(weight.reshape(-1, 1))
  return float((loss * weight).mean())


@pytest.mark.parametrize("weighting", ["mean", "cell"])
def test_dense_reg_loss_reduction(weighting):
  from scnet_jax.models.roi_heads.comask import CoMaskRoIHeads
  heads = CoMaskRoIHeads(num_classes=2, channels=64, feature_strides=(4,),
                         test=None, reg_weighting=weighting)
  rng = np.random.default_rng(0)
  cell = rng.uniform(0, 2, (2, 3, 7, 7)).astype(np.float32)
  p = rng.uniform(0, 1, (2, 3, 7, 7)).astype(np.float32)
  weight = np.where(p > 0.5, p, 0).astype(np.float32)
  valid = np.array([[True, True, True], [True, True, False]])
  # The authors' rows are all valid: compare on the valid rows only.
  rows = valid.reshape(-1)
  sel = lambda a: a.reshape(6, 7, 7)[rows]
  ours = float(heads.dense_reg_loss(cell, weight, valid))
  if weighting == "mean":
    ref = _authors_reg_reduction(sel(cell), sel(weight))
  else:   # the per-cell product the paper describes, same mean
    ref = float(torch.from_numpy(sel(cell) * sel(weight)).mean())
  np.testing.assert_allclose(ours, ref, rtol=1e-6)
  # Unweighted (collaborative=False): the plain mean of the valid cells.
  np.testing.assert_allclose(float(heads.dense_reg_loss(cell, None, valid)),
                             sel(cell).mean(), rtol=1e-6)


def _torch_roi_align(feats, rois, size, scale, ratio):
  b, k = rois.shape[:2]
  idx = np.repeat(np.arange(b), k)[:, None].astype(np.float32)
  out = torchvision.ops.roi_align(
      torch.from_numpy(feats).permute(0, 3, 1, 2),
      torch.from_numpy(np.concatenate([idx, rois.reshape(-1, 4)], 1)), size,
      spatial_scale=scale, sampling_ratio=ratio, aligned=True)
  return out.permute(0, 2, 3, 1).numpy().reshape(b, k, size, size, -1)


@pytest.mark.parametrize("modulated", [False, True])
def test_fresh_deform_pool_pack_pools_as_roi_align(modulated):
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
  xy = rng.uniform(0, 30, (2, 3, 2))
  rois = np.concatenate([xy, xy + rng.uniform(4, 30, (2, 3, 2))],
                        -1).astype(np.float32)
  pack = DeformRoIPoolPack(spatial_scale=0.25, sampling_ratio=2, fc_dim=16,
                           modulated=modulated)
  variables = pack.init(jax.random.PRNGKey(0), feats, rois)
  out = pack.apply(variables, feats, rois)
  ref = _torch_roi_align(feats, rois, 7, 0.25, 2)
  np.testing.assert_allclose(np.asarray(out),
                             ref * (0.5 if modulated else 1.0), atol=1e-5)
  # The zero-initialised offset layer learns: its gradient is not zero.
  cot = rng.normal(size=out.shape)
  g = jax.grad(lambda v: jnp.sum(pack.apply(v, feats, rois) * cot))(
      variables)
  assert np.abs(np.asarray(g["params"]["offset_fc_2"]["kernel"])).max() > 0


def test_deformable_box_pooling_counts_by_hand():
  C, FC = 256, 1024
  offset = (49 * C * FC + FC) + (FC * FC + FC) + (FC * 98 + 98)
  mask = (49 * C * FC + FC) + (FC * 49 + 49)
  for pooling, per_level in (("dpool", offset), ("mdpool", offset + mask)):
    c = config_lib.get_base("comask")
    c.model.roi_heads.roi_pooling = pooling
    counts = part_counts(c)
    assert all(counts[f"roi_heads/box_pool_{i}"] == per_level for i in range(4))


def test_second_nms_drops_refined_duplicates():
  from scnet_jax.models.roi_heads.comask import CoMaskRoIHeads
  from scnet_jax.models.structures import Detections
  heads = CoMaskRoIHeads(num_classes=2, channels=64, feature_strides=(4,),
                         test=None, refined_nms_iou=0.5)
  box = [10.0, 10.0, 30.0, 30.0]
  dets = Detections(
      boxes=np.array([[box, [11, 10, 31, 30], box, [50, 50, 60, 60]]],
                     np.float32),
      scores=np.array([[0.9, 0.8, 0.7, 0.6]], np.float32),
      labels=np.array([[0, 0, 1, 0]], np.int32),
      num_detections=np.array([4], np.int32))
  out = heads.second_nms(dets)
  assert int(out.num_detections[0]) == 3
  np.testing.assert_allclose(np.asarray(out.scores[0]), [0.9, 0.7, 0.6, 0])
  np.testing.assert_array_equal(np.asarray(out.labels[0]), [0, 1, 0, 0])


@pytest.mark.parametrize("field,value,match", [
    # Fields of the box-stage and mask-head machinery CoMask does not use.
    ("level_mapper", "mmdet", "takes no field 'level_mapper'"),
    ("stage_loss_weights", (1.0,), "takes no field 'stage_loss_weights'"),
    ("mask_num_convs", 4, "takes no field 'mask_num_convs'"),
    ("stage_iou_thrs", (0.5, 0.6), "one box stage"),
])
def test_refused_configs(field, value, match):
  config = tiny_config("comask", **{f"model.roi_heads.{field}": value})
  with pytest.raises(ConfigError, match=match):
    build_model(config)
