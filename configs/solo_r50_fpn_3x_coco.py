"""SOLO R-50-FPN 3x, multi-scale training (mmdet solo_r50_fpn_3x_coco):
shorter side drawn from 800, 768, ..., 640 per image, 36 epochs.

  python train.py --config configs/solo_r50_fpn_3x_coco.py \
      --workdir runs/solo_r50_3x --config.init_from=weights/r50
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.solo_3x()
