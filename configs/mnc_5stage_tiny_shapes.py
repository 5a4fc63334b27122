"""The small MNC trained as a 5-stage cascade (stages 2-3 re-run on the
regressed boxes with shared weights) on the embedded shapes dataset.

  python train.py --config configs/mnc_5stage_tiny_shapes.py \
      --workdir runs/mnc_5stage_tiny
"""
from scnet_jax import config_lib


def get_config():
  return config_lib.mnc_tiny_shapes(train_stages=5)
