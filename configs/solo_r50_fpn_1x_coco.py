"""SOLO R-50-FPN 1x (mmdet solo_r50_fpn_1x_coco; 36,301,232 parameters).

  python train.py --config configs/solo_r50_fpn_1x_coco.py \
      --workdir runs/solo_r50_1x
  python -m scnet_jax.convert --config configs/solo_r50_fpn_1x_coco.py \
      --source mmdet --checkpoint solo_r50_fpn_1x_coco_20210821_035055-2290a6b8.pth \
      --out weights/solo_r50_1x
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.solo_1x()
