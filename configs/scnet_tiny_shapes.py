"""A small scnet on the embedded shapes dataset (CPU-sized).

  python train.py --config configs/scnet_tiny_shapes.py \
      --workdir runs/scnet_tiny
ResNet-18 at quarter width with GroupNorm (trained from scratch), 64-channel
FPN and heads, 128x128 images; all model switches as in the full model.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.tiny_shapes("scnet")
  m = c.model
  # 4 of SCNet's 12 mask-head convs: the 12-conv head alone costs 60 % of
  # a CPU step at this size.
  m.roi_heads.mask_num_convs = 4
  config_lib.thing_only_semantic_head(m.roi_heads, m)
  c.total_steps = 1200
  return c
