"""CoMask R-50 with the MSFEM neck, 2x (24 epochs). Published (Chen et al.):
37.7 mask AP on COCO (split and schedule not stated).

  python train.py --config configs/comask_r50_mfpn_2x_coco.py \
      --workdir runs/comask_r50 --config.init_from=weights/r50
The authors' schedule: SGD lr 0.01 at batch 8 (scaled linearly with
global_batch), steps at epochs 20 and 23, linear warm-up over 1000
iterations, horizontal flip.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("comask")
  c.model_name = "comask_r50_mfpn_2x_coco"
  c.data.train.seg_dir = ""
  c.base_lr = 0.01
  c.base_batch = 8
  c.warmup_steps = 1000
  c.num_epochs = 24
  c.lr_decay_epochs = (20, 23)
  c.data.flip_prob = 0.5
  return c
