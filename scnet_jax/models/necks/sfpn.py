"""SFPN, the semantic-segmentation-enhanced FPN (Gan, Xu, Su): a
semantic-segmentation branch on the pyramid, trained with
L = L_det + alpha * L_segm (per-pixel CE).

RECONSTRUCTION: no public code or full text describes the branch beyond
that loss. What is built here is HTC's fused
semantic head on the FPN levels (all levels resized to the fusion level,
stride 8; 1x1 laterals summed; convs; 1x1 logits; a 1x1 embedding) whose
embedding is resized (bilinear, align_corners=True) to every level and
added to it, so the RPN and the RoI heads both see the fused pyramid:

    C2..C5 -> FPN -> P2..P6 -> semantic head -> logits (CE, ignore 255)
                      |              '-> embedding [B, H/8, W/8, C]
                      '-- + resize(embedding) --> P2'..P6' -> RPN, RoI heads

Its labels are `gt_semantic` (COCO-Stuff maps, or thing-only labels drawn
from the instance masks when data.*.seg_dir is empty: num_classes + 1
classes, background last).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.losses import semantic_ce
from scnet_jax.models.necks.fpn import FPN
from scnet_jax.models.roi_heads.semantic_head import SemanticHead
from scnet_jax.models.structures import SEMANTIC_KEY
from scnet_jax.ops.resize import resize_bilinear_align_corners


class SFPN(nn.Module, kw_only=True):
  """inputs: C2..C5 [B, H_i, W_i, C_i] -> len(strides) maps [B, H_l, W_l,
  channels], each FPN level plus the semantic embedding resized to it.

  semantic_head: num_classes, num_convs, conv_to_res, fusion_level,
  ignore_label, loss_weight (alpha).
  """
  channels: int = 256
  strides: Sequence[int] = (4, 8, 16, 32, 64)
  semantic_head: Any = None
  dtype: Any = jnp.float32

  @classmethod
  def train_batch_keys(cls, cfg):
    del cfg
    return (SEMANTIC_KEY,)

  def setup(self):
    h = self.semantic_head
    self.fpn = FPN(channels=self.channels, strides=self.strides,
                   dtype=self.dtype)
    self.semantic_branch = SemanticHead(
        num_classes=h.num_classes, num_convs=h.num_convs,
        conv_to_res=h.conv_to_res, fusion_level=h.fusion_level,
        channels=self.channels, dtype=self.dtype, name="semantic_head")

  def forward(self, inputs, canvas=None):
    """(fused levels, semantic logits [B, H_f, W_f, num_classes]); with a
    canvas (structures.Canvas) the embedding is resized between each
    image's canvas extents and every level stays zero outside it."""
    levels = self.fpn(inputs, canvas)
    logits, embedding = self.semantic_branch(levels, canvas)
    fused = []
    for x in levels:
      if canvas is None:
        e = resize_bilinear_align_corners(embedding, x.shape[1:3])
      else:
        e = resize_bilinear_align_corners(
            embedding, x.shape[1:3], canvas.extent(embedding.shape[1:3]),
            canvas.extent(x.shape[1:3]))
      fused.append(x + e.astype(x.dtype))
    return fused, logits

  def __call__(self, inputs, canvas=None):
    return self.forward(inputs, canvas)[0]

  def loss(self, inputs, canvas, gt, axis_name=None):
    """(fused levels, {"loss_semantic_seg": alpha * CE})."""
    fused, logits = self.forward(inputs, canvas)
    h = self.semantic_head
    ce = semantic_ce(logits, gt.semantic, h.ignore_label, axis_name,
                     h.avg_non_ignore)
    return fused, {"loss_semantic_seg": h.loss_weight * ce}
