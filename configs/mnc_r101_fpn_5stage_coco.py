"""MNC R-101-FPN on COCO trained as a 5-stage cascade (stages 2-3 re-run
on the regressed boxes, shared weights), as the paper's 5-stage model
(VOC 2012: 63.5 vs 62.6 mAP^r@0.5 for 3 stages).

  python train.py --config configs/mnc_r101_fpn_5stage_coco.py \
      --workdir runs/mnc101_5stage --config.init_from=weights/r101
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.mnc_coco(depth=101, train_stages=5)
