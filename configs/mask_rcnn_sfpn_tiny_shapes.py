"""A small Mask R-CNN + SFPN on the embedded shapes dataset (CPU-sized).

  python train.py --config configs/mask_rcnn_sfpn_tiny_shapes.py \
      --workdir runs/mask_rcnn_sfpn_tiny
mask_rcnn_tiny_shapes with the SFPN neck (necks/sfpn.py, a
reconstruction): thing-only semantic labels from the instance masks (5
classes, background last), alpha 0.2.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.tiny_shapes("mask_rcnn_sfpn")
  config_lib.thing_only_semantic_head(c.model.neck, c.model)
  c.total_steps = 1200
  return c
