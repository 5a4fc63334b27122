"""Pure, jittable array ops of the detection pipeline."""
from scnet_jax.ops.anchors import (base_anchors, grid_anchors, inside_flags,
                                   valid_flags)
from scnet_jax.ops.assign import max_iou_assign
from scnet_jax.ops.boxes import (box_area, box_iou, clip_boxes, decode_deltas,
                                 encode_deltas)
from scnet_jax.ops.grad_clip import clip_gradient
from scnet_jax.ops.image import normalize_and_pad
from scnet_jax.ops.mask_targets import (crop_instance_mask,
                                        full_mask_targets, mask_targets)
from scnet_jax.ops.mask_voting import mask_voting
from scnet_jax.ops.nms import batched_nms, nms
from scnet_jax.ops.paste import paste_image_masks, paste_masks
from scnet_jax.ops.resize import (resize_bilinear_align_corners,
                                  resize_bilinear_half_pixel)
from scnet_jax.ops.roi_align import (map_roi_levels, multilevel_roi_align,
                                     roi_align)
from scnet_jax.ops.sample import SAMPLERS, sample_boxes
