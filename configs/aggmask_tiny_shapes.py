"""A small AggMask on the embedded shapes dataset (CPU-sized): the tiny
SOLO with aggregated cell masks.

  python train.py --config configs/aggmask_tiny_shapes.py \
      --workdir runs/aggmask_tiny
Mask interpolation: configs/aggmask_interp_tiny_shapes.py. AdamW at lr
0.002, the weight generator at a tenth of it, 2050 steps, decays at 9/12
and 11/12. Expected: about 0.50 segm AP on the 200 validation images in
about 15 minutes on a 2-core CPU (docs/results.md).
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.aggmask_tiny_shapes()
  c.total_steps = 2050
  return c
