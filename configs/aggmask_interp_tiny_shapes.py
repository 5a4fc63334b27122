"""The tiny AggMask with mask interpolation: mask grids of half the
category grids (6, 5, 4, 3, 2 vs 12, 10, 8, 6, 4), each category cell
aggregating the 4 mask cells around it.

  python train.py --config configs/aggmask_interp_tiny_shapes.py \
      --workdir runs/aggmask_interp_tiny
docs/results.md has its figure (measured with an earlier SGD schedule;
not yet re-run with this config's AdamW schedule).
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.aggmask_tiny_shapes()
  c.model_name = "aggmask_interp_tiny_shapes"
  c.model.mask_head.mask_grids = (6, 5, 4, 3, 2)
  c.total_steps = 2050
  return c
