"""SCNet R-50-FPN 1x on COCO (mmdet scnet_r50_fpn_1x_coco).

  python train.py --config configs/scnet_r50_fpn_1x_coco.py --workdir runs/scnet
Published: 43.5 box AP, 39.2 mask AP on val2017 (mmdetection's SCNet
model zoo, R-50-FPN 1x).
Needs COCO-Stuff maps under data.train.seg_dir for the semantic branch; set
--config.data.train.seg_dir='' to train on thing-only labels instead.
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.get_base("scnet")
