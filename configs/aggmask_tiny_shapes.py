"""A small AggMask on the embedded shapes dataset (CPU-sized): the tiny
SOLO with aggregated cell masks.

  python train.py --config configs/aggmask_tiny_shapes.py \
      --workdir runs/aggmask_tiny
Mask interpolation: configs/aggmask_interp_tiny_shapes.py.
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.solo_tiny_shapes("aggmask")
