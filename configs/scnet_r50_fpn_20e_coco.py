"""SCNet R-50-FPN 20e (16 and 19 decay epochs). Published: 44.5 / 40.0."""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("scnet")
  c.model_name = "scnet_r50_fpn_20e_coco"
  c.num_epochs = 20
  c.lr_decay_epochs = (16, 19)
  return c
