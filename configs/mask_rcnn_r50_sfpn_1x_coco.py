"""Mask R-CNN R-50 with SFPN, 1x (a reconstruction, necks/sfpn.py).
Published (Gan, Xu, Su): 39.3 box AP / 35.8 mask AP.

  python train.py --config configs/mask_rcnn_r50_sfpn_1x_coco.py \
      --workdir runs/mask_rcnn_sfpn --config.init_from=weights/r50
The semantic labels are the COCO-Stuff maps (data.train.seg_dir, 183
classes); with seg_dir="" they are thing-only labels from the instance
masks and model.neck.semantic_head.num_classes must be 81.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("mask_rcnn_sfpn")
  c.model_name = "mask_rcnn_r50_sfpn_1x_coco"
  return c
