"""Mask R-CNN R-50-FPN with torchvision's choices, for its
`maskrcnn_resnet50_fpn` weights (python -m scnet_jax.convert --source
torchvision): 91 COCO category slots with background first (90 classes
here, background last after conversion), rounded anchors, RoIAlign
aligned=False with sampling ratio 2 and torchvision's level mapper,
score threshold 0.05, 100 detections, box deltas clamped from above
only, small boxes removed (1e-3 px for proposals, 1e-2 px for
detections), images resized to 800..1333.
"""
from scnet_jax import config_lib


def get_config():
  c = config_lib.get_base("mask_rcnn")
  c.model_name = "mask_rcnn_r50_fpn_torchvision"
  m = c.model
  m.num_classes = 90
  m.delta_clamp = "upper"
  m.rpn.round_anchors = True
  m.rpn.update(train_pre_nms=2000, train_post_nms=2000, test_pre_nms=1000,
               test_post_nms=1000, nms_iou=0.7, min_box_size=1e-3,
               loss_bbox_beta=1.0 / 9.0)
  m.roi_heads.update(aligned=False, sampling_ratio=2,
                     level_mapper="torchvision", loss_bbox_beta=1.0 / 9.0)
  # 1000 proposals x 90 classes: consider all of them before the NMS.
  m.test.update(score_thr=0.05, nms_iou=0.5, max_per_img=100,
                pre_nms_topk=90000, min_box_size=1e-2,
                mask_paste="torchvision")
  c.data.train.seg_dir = ""
  return c
