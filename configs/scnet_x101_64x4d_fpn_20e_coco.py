"""SCNet X-101-64x4d-FPN 20e. Published: 47.5 box AP / 42.3 mask AP."""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("scnet")
  c.model_name = "scnet_x101_64x4d_fpn_20e_coco"
  c.model.backbone.update(depth=101, groups=64, base_width=4)
  c.num_epochs = 20
  c.lr_decay_epochs = (16, 19)
  return c
