"""RPN (mmdet `RPNHead`): a shared 3x3 conv + ReLU, then 1x1 objectness and
1x1 deltas on every pyramid level; sampled-anchor losses and static-shape
proposals (the pure functions are in rpn.py)."""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from scnet_jax import ops
from scnet_jax.models.dense_heads import rpn
from scnet_jax.models.layers import Conv, normal
from scnet_jax.models.structures import Proposals, keys_for

# The sampling key id of the RPN (RoI heads use 1, 2, ...).


class RPNHead(nn.Module, kw_only=True):
  """Region proposal network over the neck's levels.

  Set by the detector: channels (the neck's), strides (of the levels,
  e.g. 4..64), delta_clamp (ops.decode_deltas), dtype, axis_name (the
  data-parallel axis of the loss normalisers). The rest is `model.rpn`.
  """
  CHOICES = {"sampler": ops.SAMPLERS}

  channels: int
  strides: Sequence[int]
  anchor_scales: Sequence[float] = (8,)
  anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  round_anchors: bool = False       # torchvision rounds the base anchors
  allowed_border: int = 0           # -1: train on every anchor
  pos_iou_thr: float = 0.7
  neg_iou_thr: float = 0.3
  min_pos_iou: float = 0.3
  num_samples: int = 256
  pos_fraction: float = 0.5
  sampler: str = "random"           # ops.SAMPLERS; "first" for parity tests
  loss_bbox_beta: float = 1.0 / 9.0  # SmoothL1 beta; 0 = L1 (Mask R-CNN)
  train_pre_nms: int = 2000         # per level
  train_post_nms: int = 2000        # per image
  test_pre_nms: int = 1000
  test_post_nms: int = 1000
  nms_iou: float = 0.7
  min_box_size: float = 0.0
  # The proposal boxes keep their gradient in the regression output, for
  # RoI heads that back-propagate through box coordinates (MNC).
  box_grad: bool = False
  box_grad_clip: float = 0.0        # > 0: element-wise bound of that grad
  delta_clamp: str = "symmetric"
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None

  @property
  def num_anchors(self):
    return len(self.anchor_ratios) * len(self.anchor_scales)

  def setup(self):
    self.rpn_conv = Conv(self.channels, (3, 3), padding=((1, 1), (1, 1)),
                         kernel_init=normal(0.01), dtype=self.dtype)
    self.rpn_cls = Conv(self.num_anchors, (1, 1), kernel_init=normal(0.01),
                        dtype=self.dtype)
    self.rpn_reg = Conv(self.num_anchors * 4, (1, 1),
                        kernel_init=normal(0.01), dtype=self.dtype)

  def __call__(self, feats):
    """feats: list of [B, H_l, W_l, C]. Returns per level (logits
    [B, H_l * W_l * A] float32, deltas [B, H_l * W_l * A, 4] float32),
    flat index (y * W + x) * A + a as the anchors."""
    outs = []
    for x in feats:
      h = nn.relu(self.rpn_conv(x))
      b = x.shape[0]
      outs.append((self.rpn_cls(h).reshape(b, -1).astype(jnp.float32),
                   self.rpn_reg(h).reshape(b, -1, 4).astype(jnp.float32)))
    return outs

  def anchors(self, feats):
    """Per level [H_l * W_l * A, 4] NumPy anchors (trace-time constants)."""
    return [ops.grid_anchors(f.shape[1:3], s, self.anchor_scales,
                             self.anchor_ratios, self.round_anchors)
            for f, s in zip(feats, self.strides)]

  def valid_flags(self, feats, image_hw):
    """Per level [B, H_l * W_l * A] bool: anchors on each image's canvas."""
    return [ops.valid_flags(f.shape[1:3], s, self.num_anchors, image_hw)
            for f, s in zip(feats, self.strides)]

  def proposals(self, feats, canvas, outputs=None, train=False,
                anchors=None):
    """Proposals after per-level NMS, with the train or test caps.

    canvas: structures.Canvas; outputs, anchors: this head's outputs and
    anchors on feats (computed when None).
    """
    image_hw = canvas.image_hw
    outputs = self(feats) if outputs is None else outputs
    anchors = self.anchors(feats) if anchors is None else anchors
    pre, post = ((self.train_pre_nms, self.train_post_nms) if train else
                 (self.test_pre_nms, self.test_post_nms))
    boxes, valid, scores = rpn.proposals(
        [o[0] for o in outputs], [o[1] for o in outputs],
        anchors, image_hw, pre, post, self.nms_iou,
        self.delta_clamp, self.min_box_size,
        self.valid_flags(feats, image_hw), box_grad=self.box_grad,
        box_grad_clip=self.box_grad_clip)
    return Proposals(boxes=boxes, valid=valid, scores=scores)

  def loss_and_proposals(self, feats, gt, canvas, image_keys):
    """Training: ({loss_rpn_cls, loss_rpn_bbox}, Proposals with the train
    caps). gt: GroundTruth; canvas: structures.Canvas; image_keys: [B]
    per-image PRNG keys."""
    image_hw = canvas.image_hw
    outputs = self(feats)
    anchors = self.anchors(feats)
    flags = jnp.concatenate(self.valid_flags(feats, image_hw), axis=1)
    all_anchors = np.concatenate(anchors)
    inside = ops.inside_flags(all_anchors, flags, image_hw,
                              self.allowed_border)
    losses = rpn.rpn_loss(
        keys_for(image_keys, "rpn"),
        jnp.concatenate([o[0] for o in outputs], 1),
        jnp.concatenate([o[1] for o in outputs], 1), all_anchors, inside,
        gt.boxes, gt.valid, pos_iou_thr=self.pos_iou_thr,
        neg_iou_thr=self.neg_iou_thr, min_pos_iou=self.min_pos_iou,
        num_samples=self.num_samples, pos_fraction=self.pos_fraction,
        loss_bbox_beta=self.loss_bbox_beta, sampler=self.sampler,
        axis_name=self.axis_name)
    return losses, self.proposals(feats, canvas, outputs, train=True,
                                  anchors=anchors)
