"""A small MNC (3-stage training) on the embedded shapes dataset
(CPU-sized).

  python train.py --config configs/mnc_tiny_shapes.py \
      --workdir runs/mnc_tiny
ResNet-18 at quarter width with GroupNorm (trained from scratch), 64-channel
FPN and heads, 128x128 images, MNC's 64 RoIs per image; 5-stage inference,
mask voting.
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.mnc_tiny_shapes(train_stages=3)
