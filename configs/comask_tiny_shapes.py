"""A small CoMask (MSFEM neck, collaborative head) on the embedded shapes
dataset (CPU-sized).

  python train.py --config configs/comask_tiny_shapes.py \
      --workdir runs/comask_tiny
ResNet-18 at quarter width with GroupNorm (trained from scratch), 64-channel
MSFEM and heads (a 4-conv trunk instead of 10, its IoU FCs at 128; every
RoI pooled from P2), 128x128 images. Expected: about 0.50 segm AP on the
200 validation images in about 12 minutes on a 2-core CPU (docs/results.md). Ablations: --config.model.neck.num_branches=1|2|4,
--config.model.roi_heads.collaborative=False.
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.tiny_shapes("comask")
