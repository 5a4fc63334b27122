"""The tiny AggMask with mask interpolation: mask grids of half the
category grids (6, 5, 4, 3, 2 vs 12, 10, 8, 6, 4), each category cell
aggregating the 4 mask cells around it.

  python train.py --config configs/aggmask_interp_tiny_shapes.py \
      --workdir runs/aggmask_interp_tiny
0.514 segm / 0.511 bbox AP on the 200 validation images after 4000 steps
of SGD with caps of 12, 16, 16, 4, 1 (2026-12-03, one seed; 16 img/s on a
2-core CPU); not yet run with the AdamW schedule and caps of today's
config.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.solo_tiny_shapes("aggmask")
  c.model_name = "aggmask_interp_tiny_shapes"
  c.model.mask_head.mask_grids = (6, 5, 4, 3, 2)
  return c
