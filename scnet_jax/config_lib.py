"""Defaults shared by the config files, equal to mmdetection's.

Each file in configs/ calls `get_base(family)` and overrides what differs;
every field can be overridden on the command line (`--config.a.b=value`).
"""
import ml_collections

FAMILIES = ("mask_rcnn", "cascade_mask_rcnn", "htc", "scnet")

# mmdet's img_norm_cfg (RGB).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def _rpn(family):
  """RPN settings (SCNET.md 2.3, 3.1)."""
  two_k = family != "mask_rcnn"
  return ml_collections.ConfigDict(dict(
      strides=(4, 8, 16, 32, 64), anchor_scales=(8,),
      anchor_ratios=(0.5, 1.0, 2.0), round_anchors=False,
      # Mask R-CNN's base config disables the border check (-1).
      allowed_border=-1 if family == "mask_rcnn" else 0,
      pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, num_samples=256,
      pos_fraction=0.5, loss_bbox_beta=1.0 / 9.0,
      train_pre_nms=2000, train_post_nms=2000 if two_k else 1000,
      test_pre_nms=1000, test_post_nms=1000, nms_iou=0.7,
      min_box_size=0.0))


def _roi(family):
  """RoI head settings (SCNET.md 2.4, 2.5, 2.10, 3.2)."""
  cascade = family != "mask_rcnn"
  return ml_collections.ConfigDict(dict(
      num_stages=3 if cascade else 1,
      stage_iou_thrs=(0.5, 0.6, 0.7) if cascade else (0.5,),
      stage_loss_weights=(1.0, 0.5, 0.25) if cascade else (1.0,),
      stage_target_stds=((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1),
                         (0.033, 0.033, 0.067, 0.067)) if cascade else
      ((0.1, 0.1, 0.2, 0.2),),
      # Cascade Mask R-CNN's base config sets match_low_quality=False.
      match_low_quality=family != "cascade_mask_rcnn",
      num_samples=512, pos_fraction=0.25, add_gt_as_proposals=True,
      class_agnostic=cascade, num_shared_fcs=2, fc_dim=1024,
      loss_bbox_beta=1.0,
      roi_size=7, mask_roi_size=14, mask_size=28, num_roi_levels=4,
      finest_scale=56, level_mapper="mmdet", aligned=True,
      # 0 = mmdet's adaptive rule, exact while ceil(roi / out) <= the cap.
      sampling_ratio=0, max_sampling_grid=4,
      mask_target_sampling_ratio=2, semantic_stride=8,
      mask_num_convs=12 if family == "scnet" else 4,
      mask_conv_to_res=family == "scnet",
      mask_info_flow=family == "htc", interleaved=family == "htc"))


def get_base(family):
  """A full config with mmdetection's R-50-FPN 1x defaults for `family`."""
  if family not in FAMILIES:
    raise ValueError(f"unknown model family {family!r}; one of {FAMILIES}")
  c = ml_collections.ConfigDict()
  c.model_name = family + "_r50_fpn_1x_coco"

  m = c.model = ml_collections.ConfigDict()
  m.family = family
  m.num_classes = 80  # the one place the class count is set
  m.dtype = "float32"
  m.pixel_mean = PIXEL_MEAN
  m.pixel_std = PIXEL_STD
  m.delta_clamp = "symmetric"  # mmdet; torchvision clamps dw, dh from above
  m.backbone = ml_collections.ConfigDict(dict(
      depth=50, groups=1, base_width=64, base_channels=64, frozen_stages=1,
      norm="frozen_bn"))
  m.fpn_channels = 256
  m.rpn = _rpn(family)
  m.roi = _roi(family)
  # SCNet's Table 2 switches; HTC has the semantic branch only.
  m.sample_consistency = family == "scnet"
  m.feature_relay = family == "scnet"
  m.global_context = family == "scnet"
  m.semantic = family in ("htc", "scnet")
  m.semantic_head = ml_collections.ConfigDict(dict(
      num_classes=183, num_convs=4, conv_to_res=family == "scnet",
      fusion_level=1, ignore_label=255, loss_weight=0.2))
  m.glbctx_loss_weight = 3.0
  m.test = ml_collections.ConfigDict(dict(
      score_thr=0.001 if family in ("htc", "scnet") else 0.05,
      nms_iou=0.5, max_per_img=100, pre_nms_topk=10000, mask_thr=0.5,
      min_box_size=0.0))

  d = c.data = ml_collections.ConfigDict()
  d.source = "coco"           # "coco", "shapes" or "tfds"
  d.tfds_dir = ""             # data_dir of scnet_jax.data.tfds_builder
  d.train = ml_collections.ConfigDict(dict(
      ann_file="data/coco/annotations/instances_train2017.json",
      image_dir="data/coco/train2017",
      seg_dir="data/coco/stuffthingmaps/train2017"))
  d.val = ml_collections.ConfigDict(dict(
      ann_file="data/coco/annotations/instances_val2017.json",
      image_dir="data/coco/val2017", seg_dir=""))
  d.image_scale = (1333, 800)   # (long, short) keep-ratio resize
  # Static canvases: landscape and portrait; each image goes to the one
  # that fits it, so a run compiles at most two programs per step kind.
  d.buckets = ((800, 1344), (1344, 800))
  d.max_instances = 100
  d.mask_crop_size = 112
  d.flip_prob = 0.5
  d.num_workers = 2
  # The embedded dataset (data.source='shapes'), generated on first use.
  d.shapes = ml_collections.ConfigDict(dict(
      root="data/shapes", num_train=2000, num_val=200, image_size=128,
      max_objects=6, seed=0))

  c.seed = 0
  c.global_batch = 16
  c.base_lr = 0.02
  c.base_batch = 16           # lr scales linearly with global_batch
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.grad_clip_norm = 0.0      # > 0: clip gradients by global norm
  c.warmup_steps = 500
  c.warmup_ratio = 0.001
  c.num_epochs = 12
  c.lr_decay_epochs = (8, 11)
  c.total_steps = -1          # > 0 overrides num_epochs
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.log_every = 50
  c.eval_at_end = True        # COCO metrics on data.val after training
  c.eval_batch_per_device = 1
  c.visualize_at_end = 0      # prediction pictures written after that
  c.init_from = ""            # backbone weights or a converted checkpoint
  c.parallel = "pmap"         # or "shard_map"
  c.evaluator = "faster_coco_eval"  # or "pycocotools"
  return c


def tiny(c, num_classes=4, image_size=128):
  """Shrinks a config for CPU: ResNet-18 at quarter width, 64-channel
  heads, few proposals and samples, one square bucket."""
  m = c.model
  m.num_classes = num_classes
  # No ImageNet weights on a fresh machine: train from scratch with GN.
  m.backbone.update(depth=18, base_channels=16, frozen_stages=-1, norm="gn")
  m.fpn_channels = 64
  m.rpn.update(train_pre_nms=300, train_post_nms=150, test_pre_nms=200,
               test_post_nms=100, num_samples=128)
  # 32 RoIs per image (8 positive slots): RoI heads dominate a CPU step,
  # and these images hold at most a handful of objects.
  m.roi.update(num_samples=32, fc_dim=128, sampling_ratio=2)
  m.semantic_head.num_classes = num_classes + 1
  m.test.update(max_per_img=20, pre_nms_topk=1000)
  c.data.buckets = ((image_size, image_size),)
  c.data.image_scale = (image_size, image_size)
  c.data.max_instances = 12
  c.data.mask_crop_size = 32
  return c


def tiny_shapes(family):
  """A small `family` model on the embedded shapes dataset, sized to train
  on a 2-core CPU in minutes (see README for the measured AP)."""
  c = tiny(get_base(family), num_classes=4, image_size=128)
  c.model_name = f"{family}_tiny_shapes"
  d = c.data
  d.source = "shapes"
  # Empty paths are filled from data.shapes.root (data/sources.py).
  d.train.update(ann_file="", image_dir="", seg_dir="")
  d.val.update(ann_file="", image_dir="", seg_dir="")
  d.flip_prob = 0.5
  d.num_workers = 0
  # 4 of SCNet's 12 mask-head convs: the 12-conv head alone costs 60% of a
  # CPU step at this size.
  c.model.roi.mask_num_convs = 4
  c.global_batch = 8
  c.base_lr = 0.02
  c.base_batch = 8
  c.grad_clip_norm = 35.0
  c.warmup_steps = 100
  # About 10 minutes on 2 CPU cores; decays at 8/12 and 11/12 of the run.
  c.total_steps = 1200
  c.num_epochs = 12
  c.lr_decay_epochs = (8, 11)
  c.checkpoint_every = 300
  c.log_every = 50
  c.eval_batch_per_device = 8
  c.visualize_at_end = 6
  return c
