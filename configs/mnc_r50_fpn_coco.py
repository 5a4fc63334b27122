"""MNC R-50-FPN on COCO, 3-stage training, 5-stage inference with mask
voting; the authors' solver scaled to our batch (config_lib.mnc_coco).

  python train.py --config configs/mnc_r50_fpn_coco.py --workdir runs/mnc50 \
      --config.init_from=weights/r50
No published figure for this backbone; the paper's ResNet-101 (C4-like,
no FPN) reached 24.6 mask AP on COCO test-dev.
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.mnc_coco(depth=50, train_stages=3)
