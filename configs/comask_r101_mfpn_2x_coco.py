"""CoMask R-101 with the MSFEM neck, 2x (24 epochs). Published (Chen et
al.): 38.6 mask AP on COCO.

  python train.py --config configs/comask_r101_mfpn_2x_coco.py \
      --workdir runs/comask_r101 --config.init_from=weights/r101
Schedule as comask_r50_mfpn_2x_coco (config_lib.comask_2x).
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.comask_2x()
  c.model_name = "comask_r101_mfpn_2x_coco"
  c.model.backbone.depth = 101
  return c
