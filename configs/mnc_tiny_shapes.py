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
  c = config_lib.tiny_shapes("mnc")
  # As many steps as fit in about 10 minutes on 2 CPU cores.
  c.total_steps = 1000
  return c
