"""A small mask_rcnn on the embedded shapes dataset (CPU-sized).

  python train.py --config configs/mask_rcnn_tiny_shapes.py \
      --workdir runs/mask_rcnn_tiny
ResNet-18 at quarter width with GroupNorm (trained from scratch), 64-channel
FPN and heads, 128x128 images; all model switches as in the full model.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.tiny_shapes("mask_rcnn")
  c.total_steps = 1200
  return c
