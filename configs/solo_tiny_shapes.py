"""A small SOLO on the embedded shapes dataset (CPU-sized).

  python train.py --config configs/solo_tiny_shapes.py \
      --workdir runs/solo_tiny
0.5005 segm / 0.455 bbox AP on the 200 validation images in 14 min 37 s
on a 2-core CPU at 28 img/s (AdamW at lr 0.002, 2800 steps; 2026-12-06,
one seed; the code before the RGB stem's lax gradient: 0.506 / 0.457 in
12 min 30 s at 34 img/s).
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.solo_tiny_shapes()
