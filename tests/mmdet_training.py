"""One training batch through mmdetection 3.3's SCNet, HTC, Cascade Mask
R-CNN and Mask R-CNN R-50-FPN (tests/mmdet_models.py: mmdetection's own
configs, random well-conditioned weights) and through ours, converted from
the same state dict: their losses, gradients and training proposals, for
tests/models/test_mmdet_parity.py.

The batch: skimage's cat resized to 256 x 384 (a multiple of 32, so
mmdetection's canvas is our bucket and no side resizes), three instances
with full-resolution masks, and, for HTC and SCNet, a semantic map with
stuff, thing and ignored pixels. Both sides sample deterministically: our
`sampler="first"` (RPN and RoI heads), mmdetection's `RandomSampler`
with `random_choice` taking the first `num` of its gallery. Ours runs
with mmdetection 3.3's rules: `mask_targets="full"` and, for the
semantic loss, `avg_non_ignore=False`. Both sides sample 128 RoIs per
stage from 300 proposals (SIZES; the configs' 512 and 1000-2000 cost four
times as much and check no other rule).

What the test checks, each against mmdetection's value:
- the RPN's training proposals, as a set (box IoU > 0.99);
- every loss term (relative 1e-4), ours computed with the RoI heads on
  mmdetection's proposals, so near-tied NMS order cannot move a sample;
- the gradient of the total loss for every parameter group after the
  backbone (neck, RPN, each box and mask head, the semantic, global
  context and feature-relay heads): max |ours - theirs| / max |theirs|
  under 1e-2 per group. The backbone's gradients are not compared: they
  sum float32 products over R-50's depth in different orders on the two
  sides, and the heads' gradients, which flow through the same features,
  already hold the rule;
- the first SGD step's parameter changes of the same groups (1e-2), each
  side's optimiser and warm-up built from its own config.
"""
import collections
import functools

import jax
import numpy as np
import torch

from scnet_jax.convert.core import convert_state_dict
from scnet_jax.models import resolve_model
from scnet_jax.data.resize import resize_image
from scnet_jax.models.structures import GroundTruth, Proposals
from scnet_jax.training import optim
from tests.mmdet_models import (CONFIGS, mmdet_config, our_model, photograph,
                                reference)
from tests.xla_flags import RUN

HW = (256, 384)
# Instances: (label, centre y, centre x, radius y, radius x).
INSTANCES = ((15, 150, 200, 80, 110), (0, 70, 80, 40, 30),
             (56, 210, 330, 30, 40))
SEMANTIC_FAMILIES = ("htc", "scnet")
# mmdetection 3.3's rules where our defaults follow mmdetection 2.x, and
# the deterministic sampler.
MMDET_33 = (("rpn.sampler", "first"), ("roi_heads.sampler", "first"),
            ("roi_heads.mask_targets", "full"))
SEMANTIC_33 = (("roi_heads.semantic_head.avg_non_ignore", False),)
# Smaller than the configs' counts on both sides (512 RoIs per stage, 2000
# proposals per level and image), so the box and mask heads cost a
# quarter: the rules, not the sizes, are under test.
NUM_SAMPLES, PRE_NMS, POST_NMS = 128, 1000, 300
SIZES = (("roi_heads.num_samples", NUM_SAMPLES),
         ("rpn.train_pre_nms", PRE_NMS), ("rpn.train_post_nms", POST_NMS))


@functools.lru_cache(maxsize=1)
def ground_truth():
  """image [H, W, 3] uint8 RGB, boxes [N, 4], labels [N], masks [N, H, W]
  uint8, semantic [H, W] uint8 (183 classes, 255 ignored)."""
  image = resize_image(photograph(), HW, "cv2")
  boxes, labels, masks = ellipse_instances(HW, INSTANCES)
  semantic = np.full(HW, 120, np.uint8)          # a stuff class
  semantic[:, 300:] = 140
  for label, m in zip(labels, masks):
    semantic[m > 0] = label
  semantic[:20] = 255                             # unlabelled
  return image, boxes, labels, masks, semantic


def ellipse_instances(hw, instances):
  """Elliptic instances (label, centre y, centre x, radius y, radius x) on
  an image of size hw: boxes [N, 4] float32 (their masks' bounds), labels
  [N] int64, masks [N, H, W] uint8."""
  yy, xx = np.mgrid[:hw[0], :hw[1]]
  masks, boxes = [], []
  for _, cy, cx, ry, rx in instances:
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    ys, xs = np.nonzero(m)
    masks.append(m.astype(np.uint8))
    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
  return (np.array(boxes, np.float32),
          np.array([i[0] for i in instances], np.int64), np.stack(masks))


def run_mmdet(family):
  """mmdetection's losses ({name: float}), gradients ({parameter: numpy}),
  training proposals [P, 4] and first SGD step's parameter changes
  (sgd_step), with the first-index sampler."""
  model, _, _, _ = reference(family)   # imports mmdetection
  from mmdet.models.task_modules.samplers import RandomSampler
  from mmdet.structures import DetDataSample
  from mmdet.structures.mask import BitmapMasks
  from mmengine.structures import InstanceData, PixelData
  image, boxes, labels, masks, semantic = ground_truth()
  sample = DetDataSample(metainfo=dict(img_shape=HW, ori_shape=HW,
                                       scale_factor=(1.0, 1.0), img_id=0))
  sample.gt_instances = InstanceData(
      bboxes=torch.from_numpy(boxes), labels=torch.from_numpy(labels),
      masks=BitmapMasks(masks, *HW))
  sample.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(
      semantic[None].astype(np.int64)))
  bgr = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)
  data = model.data_preprocessor({"inputs": [bgr], "data_samples": [sample]},
                                 True)
  captured = []
  roi_loss = model.roi_head.loss

  def capture(x, rpn_results, samples):
    captured.append(rpn_results[0].bboxes.detach().numpy())
    return roi_loss(x, rpn_results, samples)

  first = RandomSampler.random_choice
  RandomSampler.random_choice = lambda self, gallery, num: gallery[:num]
  model.roi_head.loss = capture
  model.train()
  samplers = model.roi_head.bbox_sampler
  samplers = samplers if isinstance(samplers, list) else [samplers]
  proposal_cfg = model.train_cfg.rpn_proposal
  sizes = ([s.num for s in samplers], proposal_cfg.nms_pre,
           proposal_cfg.max_per_img)
  for s in samplers:
    s.num = NUM_SAMPLES
  proposal_cfg.update(nms_pre=PRE_NMS, max_per_img=POST_NMS)
  try:
    model.zero_grad()
    losses = model.loss(data["inputs"], data["data_samples"])
    terms = {k: sum(v) if isinstance(v, list) else v
             for k, v in losses.items() if "loss" in k}
    sum(terms.values()).backward()
    terms = {k: float(v.detach()) for k, v in terms.items()}
  finally:
    RandomSampler.random_choice = first
    del model.roi_head.loss
    model.eval()
    for s, num in zip(samplers, sizes[0]):
      s.num = num
    proposal_cfg.update(nms_pre=sizes[1], max_per_img=sizes[2])
  grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()
           if p.grad is not None}
  deltas = sgd_step(model, CONFIGS[family])
  model.zero_grad()
  return terms, grads, captured[0], deltas


def sgd_step(model, config):
  """mmdetection's first training step's parameter changes
  ({parameter: numpy}, the parameters with a gradient): the optimiser
  wrapper (SGD) and LR schedulers (linear warm-up, steps) of its config
  file `config` (under its configs/), built by mmengine. The step runs in
  float64, so the changes (~1e-7 at the warm-up's first rate) are not
  rounded to float32 parameters' resolution; the model's parameters are
  restored (as float32, exactly)."""
  from mmengine.optim import build_optim_wrapper
  from mmengine.registry import PARAM_SCHEDULERS
  cfg = mmdet_config(config)
  model.double()
  wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
  for sched in cfg.param_scheduler:
    PARAM_SCHEDULERS.build(dict(sched, optimizer=wrapper))
  before = {k: p.detach().clone() for k, p in model.named_parameters()
            if p.grad is not None}
  wrapper.step()
  named = dict(model.named_parameters())
  deltas = {k: (named[k].detach() - v).numpy() for k, v in before.items()}
  with torch.no_grad():
    for k, v in before.items():
      named[k].copy_(v)
  model.float()
  return deltas


def our_sgd_step(c, variables, grads):
  """Our first step's parameter changes for the parameters after the
  backbone (`grads`' tree): make_optimizer with mmdetection 3.3's
  warm-up rule, at the global batch its learning rate is given for."""
  c = c.copy_and_resolve_references()
  c.update(warmup_rule="mmengine", global_batch=c.base_batch)
  params = variables["params"]
  full = {**grads, "backbone": jax.tree.map(np.zeros_like,
                                            params["backbone"])}
  tx = optim.make_optimizer(c, params, total_steps=1000)
  updates, _ = jax.jit(tx.update)(full, tx.init(params), params)
  return {k: v for k, v in updates.items() if k != "backbone"}


def our_batch(c, family):
  """Our training batch of ground_truth() (the bucket is the image)."""
  image, boxes, labels, masks, semantic = ground_truth()
  g, r, n = c.data.max_instances, c.data.mask_crop_size, len(labels)
  batch = {"image": image[None], "image_hw": np.array([HW], np.int32),
           "gt_boxes": np.zeros((1, g, 4), np.float32),
           "gt_labels": np.zeros((1, g), np.int32),
           "gt_valid": (np.arange(g) < n)[None],
           "gt_mask_crops": np.zeros((1, g, r, r), np.uint8),
           "gt_mask_windows": np.zeros((1, g, 4), np.float32),
           "gt_masks": np.zeros((1, g, *HW), np.uint8)}
  batch["gt_boxes"][0, :n] = boxes
  batch["gt_labels"][0, :n] = labels
  batch["gt_masks"][0, :n] = masks
  if family in SEMANTIC_FAMILIES:
    batch["gt_semantic"] = semantic[None, ::8, ::8]
  return batch


# What run_ours computes: losses {name: float}, gradients (params tree
# after the backbone), training proposals [P, 4], the converted variables
# and the config.
Ours = collections.namedtuple("Ours",
                              "terms grads proposals variables config")


def run_ours(family, mmdet_proposals):
  """Ours, with the RoI heads run on mmdetection's proposals."""
  _, _, _, state = reference(family)
  settings = MMDET_33 + SIZES + (SEMANTIC_33 if family in SEMANTIC_FAMILIES
                                 else ())
  c, model, variables = our_model(family, state, settings)
  batch = our_batch(c, family)
  p = resolve_model(c.model).rpn.train_post_nms
  n = len(mmdet_proposals)
  given = Proposals(
      boxes=np.pad(mmdet_proposals, ((0, p - n), (0, 0)))[None],
      valid=(np.arange(p) < n)[None], scores=np.zeros((1, p), np.float32))

  def losses(m, b, props):
    keys = m.sampling_keys(b)
    gt = GroundTruth.from_batch(b)
    c_feats, canvas = m.backbone_features(b["image"], b["image_hw"])
    feats, neck_losses = m.neck.loss(c_feats, canvas, gt, m.axis_name)
    rpn_losses, proposals = m.rpn_head.loss_and_proposals(feats, gt, canvas,
                                                          keys)
    terms = {**neck_losses, **rpn_losses,
             **m.roi_heads.loss(feats, props, gt, canvas, keys)}
    return terms, proposals

  # Gradients of everything after the backbone (arguments, not constants
  # of the program).
  params = dict(variables["params"])
  backbone = {"backbone": params.pop("backbone")}

  @functools.partial(jax.jit, compiler_options=RUN)
  def step(others, fixed, b, props):
    def total(others):
      v = {**fixed, "params": {**others, **fixed["params"]}}
      terms, proposals = model.apply(
          v, b, props, method=losses,
          rngs={"sample": jax.random.PRNGKey(0)})
      return sum(terms.values()), (terms, proposals)
    return jax.grad(total, has_aux=True)(others)

  grads, (terms, proposals) = step(
      params, {**variables, "params": backbone}, batch, given)
  boxes = np.asarray(proposals.boxes[0])[np.asarray(proposals.valid[0])]
  return Ours(terms={k: float(v) for k, v in terms.items()}, grads=grads,
              proposals=boxes, variables=variables, config=c)


def part_groups(state, tree, mmdet_arrays, variables):
  """{group: (ours, theirs)}: per-parameter arrays (gradients, steps) of
  our params-like `tree` and mmdetection's {parameter: numpy}, theirs
  converted into our layout (that of `variables`, from mmdetection's
  state dict `state`), flattened per group; a group is a part after the
  backbone, split per head."""
  full = {k: mmdet_arrays.get(k, np.zeros_like(v))
          for k, v in state.items()}
  converted, _ = convert_state_dict(full, "mmdet", variables)
  theirs = jax.tree_util.tree_flatten_with_path(converted["params"])[0]
  ours = dict(jax.tree_util.tree_flatten_with_path(tree)[0])
  groups = {}
  for path, value in theirs:
    names = [k.key for k in path]
    if names[0] == "backbone":
      continue
    group = "/".join(names[:2] if names[0] == "roi_heads" else names[:1])
    a, b = groups.setdefault(group, ([], []))
    a.append(np.ravel(ours[path]))
    b.append(np.ravel(value))
  return {g: (np.concatenate(a), np.concatenate(b))
          for g, (a, b) in groups.items()}
