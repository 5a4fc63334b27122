"""AggMask R-101-FPN 3x (the authors' aggmask_r101_fpn: 38.6 mask AP on COCO
minival; SOLO R-101 37.1), multi-scale training, 36 epochs.

  python train.py --config configs/aggmask_r101_fpn_3x_coco.py \
      --workdir runs/aggmask_r101_3x --config.init_from=weights/r101
Mask interpolation (their -mask-grid config, 38.8):
  --config.model.mask_head.mask_grids="(20, 18, 12, 8, 6)"
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.aggmask_3x(101)
