"""A small CoMask (MSFEM neck, collaborative head) on the embedded shapes
dataset (CPU-sized).

  python train.py --config configs/comask_tiny_shapes.py \
      --workdir runs/comask_tiny
ResNet-18 at quarter width with GroupNorm (trained from scratch), 64-channel
MSFEM and heads (a 4-conv trunk instead of 10, its IoU FCs at 128; every
RoI pooled from P2), 128x128 images. Expected: about 0.50 segm AP on the
200 validation images in about 12 minutes on a 2-core CPU
(docs/results.md). Ablations: --config.model.neck.num_branches=1|2|4,
--config.model.roi_heads.collaborative=False.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.tiny_shapes("comask")
  r = c.model.roi_heads
  # A 4-conv trunk instead of 10 and 128-wide mask-IoU FCs: trained from
  # scratch in this schedule, the 64-channel GroupNorm trunk learns more
  # with 4 (docs/models/comask.md).
  r.update(reg_num_convs=4, reg_fc_dim=128)
  # CoMask's level rule goes by the box's share of the image: a box of
  # more than an eighth of it pools from P3, where at 128 px a 45-64 px
  # object spans 6-8 cells for a 14x14 head. Every RoI pools from P2, as
  # the FPN mapper sends every box under 224 px.
  r.max_level = 0
  c.total_steps = 1200
  return c
