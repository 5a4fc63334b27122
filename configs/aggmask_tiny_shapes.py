"""A small AggMask on the embedded shapes dataset (CPU-sized): the tiny
SOLO with aggregated cell masks.

  python train.py --config configs/aggmask_tiny_shapes.py \
      --workdir runs/aggmask_tiny
Mask interpolation: configs/aggmask_interp_tiny_shapes.py. 0.505 segm /
0.502 bbox AP on the 200 validation images in 14 min 25 s on a 2-core CPU
at 22.5 img/s (AdamW at lr 0.002, the weight generator at a tenth of it,
2050 steps, decays at 9/12 and 11/12; 2026-12-06, one seed; the code
before the RGB stem's lax gradient: 0.510 / 0.505 in 15 min 32-40 s at
21 img/s). With SGD
at lr 0.02: 0.360 in 2200 steps; 0.523 in 4000 steps and 38 min
(2026-12-03, with caps of 12, 16, 16, 4, 1).
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.solo_tiny_shapes("aggmask")
