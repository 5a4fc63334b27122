"""Cascade Mask R-CNN R-101 with SFPN, 1x (a reconstruction,
necks/sfpn.py). Published (Gan, Xu, Su, Cascade R-CNN R-101): 43.5 box AP.

  python train.py --config configs/cascade_mask_rcnn_r101_sfpn_1x_coco.py \
      --workdir runs/cascade_sfpn --config.init_from=weights/r101
Semantic labels: the COCO-Stuff maps (data.train.seg_dir, 183 classes).
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("cascade_mask_rcnn_sfpn")
  c.model_name = "cascade_mask_rcnn_r101_sfpn_1x_coco"
  c.model.backbone.depth = 101
  return c
