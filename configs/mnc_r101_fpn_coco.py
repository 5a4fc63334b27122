"""MNC R-101-FPN on COCO, 3-stage training, 5-stage inference with mask
voting; the authors' solver scaled to our batch (config_lib.mnc_coco).

  python train.py --config configs/mnc_r101_fpn_coco.py \
      --workdir runs/mnc101 --config.init_from=weights/r101
Paper (ResNet-101 without FPN): 24.6 mask AP on COCO test-dev (AP50 44.3,
AP75 24.8).
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.mnc_coco(depth=101, train_stages=3)
