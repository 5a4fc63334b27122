"""AggMask R-50-FPN 3x (the authors' aggmask_r50_fpn: 37.9 mask AP on COCO
minival): SOLO with locally aggregated cell masks, multi-scale training,
36 epochs, lr 0.01 at batch 16, gradient clip 35.

  python train.py --config configs/aggmask_r50_fpn_3x_coco.py \
      --workdir runs/aggmask_r50_3x --config.init_from=weights/r50
Mask interpolation (their -mask-grid configs):
  --config.model.mask_head.mask_grids="(20, 18, 12, 8, 6)"
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.aggmask_3x(50)
