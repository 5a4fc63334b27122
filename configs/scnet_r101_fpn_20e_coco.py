"""SCNet R-101-FPN 20e. Published: 45.8 box AP / 40.9 mask AP."""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("scnet")
  c.model_name = "scnet_r101_fpn_20e_coco"
  c.model.backbone.depth = 101
  c.num_epochs = 20
  c.lr_decay_epochs = (16, 19)
  return c
