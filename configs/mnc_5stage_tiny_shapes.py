"""The small MNC trained as a 5-stage cascade (stages 2-3 re-run on the
regressed boxes with shared weights) on the embedded shapes dataset.

  python train.py --config configs/mnc_5stage_tiny_shapes.py \
      --workdir runs/mnc_5stage_tiny
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.tiny_shapes("mnc")
  c.model_name = "mnc_5stage_tiny_shapes"
  c.model.roi_heads.train_stages = 5
  # A 5-stage step costs 1.55x a 3-stage one (the RoI heads run twice):
  # about the 3-stage run's time.
  c.total_steps = 650
  return c
