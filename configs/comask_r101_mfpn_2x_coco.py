"""CoMask R-101 with the MSFEM neck, 2x (24 epochs). Published (Chen et
al.): 38.6 mask AP on COCO.

  python train.py --config configs/comask_r101_mfpn_2x_coco.py \
      --workdir runs/comask_r101 --config.init_from=weights/r101
Schedule as comask_r50_mfpn_2x_coco.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("comask")
  c.data.train.seg_dir = ""
  c.base_lr = 0.01
  c.base_batch = 8
  c.warmup_steps = 1000
  c.num_epochs = 24
  c.lr_decay_epochs = (20, 23)
  c.model_name = "comask_r101_mfpn_2x_coco"
  c.model.backbone.depth = 101
  return c
