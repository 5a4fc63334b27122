"""HTC R-50-FPN 1x (mmdet htc_r50_fpn_1x_coco). Published: 42.3 / 37.4."""
from scnet_jax import config_lib


def get_config():
  return config_lib.get_base("htc")
