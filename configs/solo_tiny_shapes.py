"""A small SOLO on the embedded shapes dataset (CPU-sized).

  python train.py --config configs/solo_tiny_shapes.py \
      --workdir runs/solo_tiny
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.solo_tiny_shapes()
