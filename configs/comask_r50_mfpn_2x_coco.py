"""CoMask R-50 with the MSFEM neck, 2x (24 epochs). Published (Chen et al.):
37.7 mask AP on COCO (split and schedule not stated).

  python train.py --config configs/comask_r50_mfpn_2x_coco.py \
      --workdir runs/comask_r50 --config.init_from=weights/r50
The authors' schedule (config_lib.comask_2x): SGD lr 0.01 at batch 8
(scaled linearly with global_batch), steps at epochs 20 and 23, linear
warm-up over 1000 iterations, horizontal flip.
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.comask_2x()
