"""A small cascade_mask_rcnn on the embedded shapes dataset (CPU-sized).

  python train.py --config configs/cascade_mask_rcnn_tiny_shapes.py \
      --workdir runs/cascade_mask_rcnn_tiny
ResNet-18 at quarter width with GroupNorm (trained from scratch), 64-channel
FPN and heads, 128x128 images; all model switches as in the full model.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.tiny_shapes("cascade_mask_rcnn")
  # For the ablation that switches the semantic branch on.
  config_lib.thing_only_semantic_head(c.model.roi_heads, c.model)
  c.total_steps = 1200
  return c
