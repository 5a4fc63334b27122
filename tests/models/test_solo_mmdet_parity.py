"""SOLO end to end against mmdetection 3.3's SOLOHead (solo_r50_fpn_1x_coco,
random well-conditioned weights) on one real photograph (skimage's
astronaut at 320 x 320) padded into a larger bucket: mask logits and
category logits of every level on the canvas (relative 1e-3), and the
final detections after Matrix NMS (same label, score within 1e-3, mask
IoU > 0.95 in the image); the head at other strides than mmdet's
(`mask_head.strides`, P2 kept at its own stride 4) against mmdet's head
with its resize of P2 left out; and training: the losses (relative 1e-4),
the gradients of the neck and the head and their first SGD step (1e-2)
on the photograph with three instances."""
import functools
import os

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from scnet_jax import config_lib
from scnet_jax.errors import ConfigError
from scnet_jax.models import build_model
from scnet_jax.ops.mask_targets import crop_instance_mask
from scnet_jax.ops.paste import paste_image_masks
from tests.mmdet_models import converted, set_backbone_statistics
from tests.mmdet_training import (ellipse_instances, our_sgd_step,
                                  part_groups, sgd_step)
from tests.xla_flags import RUN

SIDE = 320
BUCKET = (352, 480)


def _photograph():
  from skimage import data
  return np.asarray(Image.fromarray(data.astronaut()).resize(
      (SIDE, SIDE), Image.BILINEAR))


def _condition(model, inputs, seed=1):
  """He-scaled convs, GN affine near 1, backbone BatchNorm statistics from
  this image, and the head's output convs scaled so their outputs spread
  (category logits std 1.5 around -1, mask logits std 2)."""
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, torch.nn.Conv2d):
      m.weight.data = torch.randn(m.weight.shape, generator=g) * (
          2.0 / m.weight[0].numel()) ** 0.5
      if m.bias is not None:
        m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.05
    elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
      m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g)
      m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
  set_backbone_statistics(model, inputs)
  head = model.mask_head
  outs = {}
  hooks = [m.register_forward_hook(lambda mod, a, o: outs.setdefault(
      id(mod), []).append(o)) for m in [head.conv_cls, *head.conv_mask_list]]
  with torch.no_grad():
    head(model.neck(model.backbone(inputs)))
  for h in hooks:
    h.remove()
  for m, std, mean in [(head.conv_cls, 1.5, -1.0)] + [
      (m, 2.0, 0.0) for m in head.conv_mask_list]:
    o = torch.cat([x.flatten() for x in outs[id(m)]])
    m.weight.data *= std / float(o.std())
    m.bias.data = (m.bias.data - float(o.mean())) * std / float(o.std()) \
        + mean


@functools.lru_cache(maxsize=1)
def reference():
  from tests.mmdet_reference import install
  install()
  import mmdet
  from mmdet.registry import MODELS
  from mmdet.structures import DetDataSample
  from mmdet.utils import register_all_modules
  from mmengine.config import Config
  register_all_modules()
  cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), ".mim",
                                     "configs", "solo",
                                     "solo_r50_fpn_1x_coco.py"))
  cfg.model.backbone.init_cfg = None
  torch.manual_seed(0)
  model = MODELS.build(cfg.model).eval()
  image = _photograph()
  sample = DetDataSample(metainfo=dict(
      img_shape=(SIDE, SIDE), ori_shape=(SIDE, SIDE),
      scale_factor=(1.0, 1.0), img_id=0))
  bgr = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)
  data = model.data_preprocessor({"inputs": [bgr], "data_samples": [sample]},
                                 False)
  _condition(model, data["inputs"])
  head = model.mask_head
  seen = {}
  hooks = [m.register_forward_hook(lambda mod, a, o, k=k: seen.__setitem__(
      k, o.detach().numpy())) for k, m in
      [("cls", head.conv_cls)] + [(i, m) for i, m in
                                  enumerate(head.conv_mask_list)]]
  cls_out = []
  hooks[0].remove()
  hooks[0] = head.conv_cls.register_forward_hook(
      lambda mod, a, o: cls_out.append(o.detach().numpy()))
  with torch.no_grad():
    (result,) = model.predict(data["inputs"], data["data_samples"],
                              rescale=True)
  for h in hooks:
    h.remove()
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  masks = [seen[i] for i in range(5)]
  return (image, state, masks, cls_out, result.pred_instances, model,
          data["inputs"])


@functools.lru_cache(maxsize=2)
def ours(strides=None):
  image, state, *_ = reference()
  config = config_lib.get_base("solo")
  if strides is not None:
    config.model.mask_head.strides = strides
  model = build_model(config)
  variables = converted(model, config, state)
  batch = {"image": np.zeros((1, *BUCKET, 3), np.uint8),
           "image_hw": np.array([[SIDE, SIDE]], np.int32)}
  batch["image"][0, :SIDE, :SIDE] = image
  dets, inter = jax.jit(lambda v, b: model.apply(
      v, b, method=model.predict, mutable=["intermediates"]),
                        compiler_options=RUN)(variables, batch)
  return dets, inter["intermediates"]["mask_head"]


def _rel(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_level_logits_equal_mmdet():
  _, _, masks, cls, *_ = reference()
  _, inter = ours()
  for level in range(5):
    want = masks[level][0].transpose(1, 2, 0)
    got = np.asarray(inter["mask_logits"][0][level][0])
    h, w = want.shape[:2]
    assert _rel(got[:h, :w], want) < 1e-3, level
    want_cls = cls[level][0].transpose(1, 2, 0)
    got_cls = np.asarray(inter["cls_logits"][0][level][0])
    assert _rel(got_cls, want_cls) < 1e-3, level


def test_detections_equal_mmdet():
  inst = reference()[4]
  dets, _ = ours()
  n = int(dets.num_detections[0])
  want_scores = inst.scores.numpy()
  assert n == len(want_scores) and n > 10
  got = paste_image_masks(np.asarray(dets.masks[0, :n]), dets.mask_stride,
                          (SIDE, SIDE), (SIDE, SIDE))
  want = inst.masks.numpy()
  labels, scores = np.asarray(dets.labels[0]), np.asarray(dets.scores[0])
  want_labels = inst.labels.numpy()
  # Rank by rank, allowing a swap of near-tied neighbours.
  for i in range(n):
    ious = [np.sum(got[i] & want[j]) / max(np.sum(got[i] | want[j]), 1)
            for j in range(max(i - 2, 0), min(i + 3, n))
            if want_labels[j] == labels[i] and
            abs(want_scores[j] - scores[i]) < 1e-3]
    assert ious and max(ious) > 0.95, (i, ious)


def test_head_at_p2_stride_equals_mmdet_without_its_resize():
  """strides (4, 8, 16, 32, 32): level 0 reads P2 as it is (mask logits at
  stride 2); mmdet's head computes the same once its P2 halving is
  skipped (the reference's other levels are its own resize_feats')."""
  *_, model, inputs = reference()
  head = model.mask_head
  resize = head.resize_feats
  head.resize_feats = lambda x: [x[0]] + list(resize(x)[1:])
  # Training mode: the logits (at test mmdet's forward returns sigmoids
  # resized onto level 0); the head's GroupNorms keep no statistics.
  head.train()
  try:
    with torch.no_grad():
      masks, cls = head(model.neck(model.backbone(inputs)))
  finally:
    del head.resize_feats
    head.eval()
  _, inter = ours((4, 8, 16, 32, 32))
  for level in range(5):
    want = masks[level][0].numpy().transpose(1, 2, 0)
    got = np.asarray(inter["mask_logits"][0][level][0])
    h, w = want.shape[:2]
    assert _rel(got[:h, :w], want) < 1e-3, level
    assert _rel(np.asarray(inter["cls_logits"][0][level][0]),
                cls[level][0].numpy().transpose(1, 2, 0)) < 1e-3, level
  # Level 0's mask map at stride 2: twice the resolution of mmdet's.
  assert inter["mask_logits"][0][0].shape[1] == BUCKET[0] // 2


@pytest.mark.parametrize("strides", [(2, 8, 16, 32, 32),
                                     (8, 8, 16, 32, 16)])
def test_strides_far_from_the_levels_are_refused(strides):
  config = config_lib.get_base("solo")
  config.model.mask_head.strides = strides
  with pytest.raises(ConfigError, match=r"model.mask_head.strides\["):
    build_model(config)


# Training instances on the photograph: (label, centre y, centre x, radius
# y, radius x); boxes up to 200 px, under the crop side below, where the
# crops read back the full-resolution masks exactly (ops/solo_targets.py).
INSTANCES = ((0, 160, 150, 100, 60), (27, 60, 250, 30, 45),
             (41, 270, 70, 25, 25))
CROP = 256


def _training_ground_truth():
  """boxes [N, 4] float32, labels [N] int64, masks [N, SIDE, SIDE] uint8."""
  return ellipse_instances((SIDE, SIDE), INSTANCES)


def _mmdet_training():
  """mmdetection's losses, gradients and first SGD step's parameter
  changes ({parameter: numpy})."""
  image, *_, model, _ = reference()
  from mmdet.structures import DetDataSample
  from mmdet.structures.mask import BitmapMasks
  from mmengine.structures import InstanceData
  boxes, labels, masks = _training_ground_truth()
  sample = DetDataSample(metainfo=dict(
      img_shape=(SIDE, SIDE), ori_shape=(SIDE, SIDE),
      scale_factor=(1.0, 1.0), img_id=0))
  sample.gt_instances = InstanceData(
      bboxes=torch.from_numpy(boxes), labels=torch.from_numpy(labels),
      masks=BitmapMasks(masks, SIDE, SIDE))
  bgr = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)
  data = model.data_preprocessor({"inputs": [bgr], "data_samples": [sample]},
                                 True)
  model.train()
  try:
    model.zero_grad()
    losses = model.loss(data["inputs"], data["data_samples"])
    sum(losses.values()).backward()
  finally:
    model.eval()
  grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()
           if p.grad is not None}
  deltas = sgd_step(model, "solo/solo_r50_fpn_1x_coco.py")
  model.zero_grad()
  return {k: float(v.detach()) for k, v in losses.items()}, grads, deltas


def _our_training(state):
  """Our losses, the gradients of every parameter after the backbone (a
  bucket equal to the image) and the converted variables."""
  image = reference()[0]
  # mmdetection's solo_r50_fpn_1x_coco, its learning rate included.
  config = config_lib.solo_1x()
  config.data.update(max_instances=8, mask_crop_size=CROP)
  model = build_model(config)
  variables = converted(model, config, state)
  boxes, labels, masks = _training_ground_truth()
  g, n = config.data.max_instances, len(labels)
  batch = {"image": image[None], "image_hw": np.array([[SIDE, SIDE]],
                                                       np.int32),
           "gt_boxes": np.zeros((1, g, 4), np.float32),
           "gt_labels": np.zeros((1, g), np.int32),
           "gt_valid": (np.arange(g) < n)[None],
           "gt_mask_crops": np.zeros((1, g, CROP, CROP), np.uint8),
           "gt_mask_windows": np.zeros((1, g, 4), np.float32)}
  batch["gt_boxes"][0, :n] = boxes
  batch["gt_labels"][0, :n] = labels
  for i, (m, b) in enumerate(zip(masks, boxes)):
    batch["gt_mask_crops"][0, i], batch["gt_mask_windows"][0, i] = \
        crop_instance_mask(m, b, CROP)
  backbone = variables["params"]["backbone"]
  others = {k: v for k, v in variables["params"].items() if k != "backbone"}

  @jax.jit
  def step(others, b):
    def total(others):
      v = {**variables, "params": {**others, "backbone": backbone}}
      terms = model.apply(v, b, method=model.loss,
                          rngs={"sample": jax.random.PRNGKey(0)})
      return sum(terms.values()), terms
    return jax.grad(total, has_aux=True)(others)

  grads, terms = step(others, batch)
  return {k: float(v) for k, v in terms.items()}, grads, variables, config


def test_training_equals_mmdet():
  ref_terms, ref_grads, ref_deltas = _mmdet_training()
  state = reference()[1]
  terms, grads, variables, config = _our_training(state)
  assert sorted(terms) == sorted(ref_terms)
  for k in terms:
    assert abs(terms[k] - ref_terms[k]) < 1e-4 * abs(ref_terms[k]), k
  print("solo losses", {k: terms[k] / ref_terms[k] - 1 for k in terms})
  # mmdetection's gradients and first SGD step converted into our layout,
  # per part.
  deltas = our_sgd_step(config, variables, grads)
  for name, ours, ref in (("gradients", grads, ref_grads),
                          ("SGD step", deltas, ref_deltas)):
    groups = part_groups(state, ours, ref, variables)
    assert sorted(groups) == sorted(ours), name
    errors = {}
    for part, (a, b) in groups.items():
      assert np.abs(b).max() > 0, (name, part)
      errors[part] = _rel(a, b)
    print("solo", name, errors)
    assert max(errors.values()) < 1e-2, (name, errors)
