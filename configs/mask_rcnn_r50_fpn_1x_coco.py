"""Mask R-CNN R-50-FPN 1x. Published: 38.2 box AP / 34.7 mask AP."""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("mask_rcnn")
  c.data.train.seg_dir = ""
  return c
