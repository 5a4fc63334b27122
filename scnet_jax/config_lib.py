"""Defaults shared by the config files, equal to mmdetection's.

Each file in configs/ calls `get_base(system)` and overrides what differs;
every field can be overridden on the command line (`--config.a.b=value`).
The model section has one sub-section per part, whose `type` picks the
class in models/registry.py and whose other fields are that class's
keyword arguments.
"""
import ml_collections

# mmdet's img_norm_cfg (RGB).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def _rpn(**overrides):
  """RPN settings (mmdetection's rpn_head, train_cfg.rpn and test_cfg.rpn):
  `RPNHead` fields."""
  return _updated(ml_collections.ConfigDict(dict(
      type="rpn", anchor_scales=(8,), anchor_ratios=(0.5, 1.0, 2.0),
      round_anchors=False, allowed_border=0, pos_iou_thr=0.7,
      neg_iou_thr=0.3, min_pos_iou=0.3, num_samples=256, pos_fraction=0.5,
      loss_bbox_beta=1.0 / 9.0, train_pre_nms=2000, train_post_nms=2000,
      test_pre_nms=1000, test_post_nms=1000, nms_iou=0.7,
      min_box_size=0.0)), overrides)


def _updated(section, overrides):
  section.update(overrides)
  return section


def _roi_heads(type_name, **overrides):
  """RoI head settings shared by every type (mmdetection's roi_head,
  train_cfg.rcnn and test_cfg.rcnn):
  `StandardRoIHeads` fields; `overrides` sets the type's own."""
  return _updated(ml_collections.ConfigDict(dict(
      type=type_name,
      stage_iou_thrs=(0.5,), stage_loss_weights=(1.0,),
      stage_target_stds=((0.1, 0.1, 0.2, 0.2),),
      match_low_quality=True, num_samples=512, pos_fraction=0.25,
      add_gt_as_proposals=True,
      class_agnostic=False, num_shared_fcs=2, fc_dim=1024,
      loss_bbox_beta=1.0,
      roi_size=7, mask_roi_size=14, num_roi_levels=4, finest_scale=56,
      level_mapper="mmdet", aligned=True,
      sampling_ratio=0,  # mmdet's adaptive rule, exact
      mask_size=28, mask_num_convs=4, mask_conv_to_res=False,
      mask_target_sampling_ratio=2)), overrides)


# The three box stages of every cascade (mmdetection's cascade configs).
CASCADE_STAGES = dict(
    stage_iou_thrs=(0.5, 0.6, 0.7), stage_loss_weights=(1.0, 0.5, 0.25),
    stage_target_stds=((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1),
                       (0.033, 0.033, 0.067, 0.067)),
    class_agnostic=True)


def _semantic_head(conv_to_res=False):
  """HTC's fused semantic head (SCNet's with residual convs)."""
  return ml_collections.ConfigDict(dict(
      num_classes=183, num_convs=4, conv_to_res=conv_to_res, fusion_level=1,
      ignore_label=255, loss_weight=0.2))


def _test(score_thr):
  return ml_collections.ConfigDict(dict(
      score_thr=score_thr, nms_iou=0.5, max_per_img=100, pre_nms_topk=10000,
      mask_thr=0.5, min_box_size=0.0,
      # How box-relative masks enter the image: ops.paste.PASTE_RULES.
      mask_paste="mmdet"))


def _common_model():
  m = ml_collections.ConfigDict()
  m.type = "two_stage"
  m.num_classes = 80  # the one place the class count is set
  m.dtype = "float32"
  m.pixel_mean = PIXEL_MEAN
  m.pixel_std = PIXEL_STD
  m.delta_clamp = "symmetric"  # mmdet; torchvision clamps dw, dh from above
  m.backbone = ml_collections.ConfigDict(dict(
      type="resnet", depth=50, groups=1, base_width=64, base_channels=64,
      frozen_stages=1, norm="frozen_bn"))
  m.neck = ml_collections.ConfigDict(dict(
      type="fpn", channels=256, strides=(4, 8, 16, 32, 64)))
  m.rpn = _rpn()
  return m


def mask_rcnn_model():
  """Mask R-CNN R-50-FPN (mmdet mask-rcnn_r50_fpn_1x_coco)."""
  m = _common_model()
  # Mask R-CNN's base config disables the border check, keeps 1000
  # training proposals and regresses boxes with L1 (beta 0), RPN and R-CNN.
  m.rpn = _rpn(allowed_border=-1, train_post_nms=1000, loss_bbox_beta=0.0)
  m.roi_heads = _roi_heads("standard", loss_bbox_beta=0.0)
  m.test = _test(0.05)
  return m


def cascade_mask_rcnn_model():
  """Cascade Mask R-CNN R-50-FPN; its base config sets
  match_low_quality=False and has no semantic branch."""
  m = _common_model()
  m.roi_heads = _roi_heads("cascade", **CASCADE_STAGES,
                           match_low_quality=False, semantic=False,
                           semantic_head=_semantic_head())
  m.test = _test(0.05)
  return m


def htc_model():
  """HTC R-50-FPN: the cascade with the semantic branch, interleaving and
  the mask information flow."""
  m = _common_model()
  m.roi_heads = _roi_heads("htc", **CASCADE_STAGES, semantic=True,
                           semantic_head=_semantic_head(),
                           interleaved=True, mask_info_flow=True,
                           test_mask_merge="all_stages")
  m.test = _test(0.001)
  return m


def scnet_model():
  """SCNet R-50-FPN; Table 2's switches are roi_heads.sample_consistency,
  feature_relay, global_context and semantic."""
  m = _common_model()
  m.roi_heads = _roi_heads(
      "scnet", **CASCADE_STAGES, mask_num_convs=12, mask_conv_to_res=True,
      semantic=True, semantic_head=_semantic_head(conv_to_res=True),
      sample_consistency="single", feature_relay=True, global_context=True,
      glbctx_loss_weight=3.0)
  m.test = _test(0.001)
  return m


def mnc_model():
  """MNC (Dai, He and Sun 2016) on R-50-FPN, with the authors' choices
  (`daijifeng001/MNC`, lib/mnc_config.py, mnc_5stage.yml): 300 proposals
  whose boxes keep their gradient (each delta's bounded by 1 / 512), 64
  RoIs per image with 30 % foreground at IoU 0.5 (no low-quality
  matches), stage-3 pathways of 2 FC 4096, mask BCE x2; test: 5-stage
  inference, NMS 0.3, masks voted and binarised at 0.4.
  roi_heads.train_stages (3 or 5) is the paper's 3- vs 5-stage training;
  mask_size 21 is the authors' code."""
  m = _common_model()
  # The authors bound each box-delta gradient from the boxes by 1 / 512
  # (proposal_layer.py and stage_bridge_layer.py, clip_base 512).
  m.rpn = _rpn(train_post_nms=300, test_post_nms=300, box_grad=True,
               box_grad_clip=1.0 / 512)
  m.roi_heads = _roi_heads(
      "mnc", num_samples=64, pos_fraction=0.3, match_low_quality=False,
      fc_dim=4096, mask_fc_dim=256, mask_loss_weight=2.0, train_stages=3,
      test_stages=5, box_grad=True, box_grad_clip=1.0 / 512, vote_iou=0.5,
      max_voters=64)
  # The mask head is two FCs, not an FCN.
  del m.roi_heads["mask_num_convs"], m.roi_heads["mask_conv_to_res"]
  m.test = _test(0.001)
  m.test.update(nms_iou=0.3, mask_thr=0.4)
  return m


def _sfpn_neck():
  """SFPN (necks/sfpn.py, a reconstruction): FPN plus HTC's fused semantic
  head whose embedding is added to every level; alpha = loss_weight."""
  return ml_collections.ConfigDict(dict(
      type="sfpn", channels=256, strides=(4, 8, 16, 32, 64),
      semantic_head=_semantic_head()))


def mask_rcnn_sfpn_model():
  """Mask R-CNN R-50 with SFPN (published 39.3 box / 35.8 mask AP)."""
  m = mask_rcnn_model()
  m.neck = _sfpn_neck()
  return m


def cascade_mask_rcnn_sfpn_model():
  """Cascade Mask R-CNN with SFPN (published, Cascade R-CNN R-101: 43.5
  box AP)."""
  m = cascade_mask_rcnn_model()
  m.neck = _sfpn_neck()
  return m


def comask_model():
  """CoMask R-50 with the MSFEM neck (the authors' CoMask_r50_mfpn_2x and
  D2Det COCO settings: 2000 training proposals, 700 at test, NMS 0.3)."""
  m = _common_model()
  m.neck = ml_collections.ConfigDict(dict(
      type="msfem", channels=256, strides=(4, 8, 16, 32, 64),
      num_branches=4, attention="rca"))
  m.roi_heads = _roi_heads(
      "comask", collaborative=True, loss_cls_weight=2.0,
      reg_loss_weight=2.0, mask_iou_loss_weight=0.5, reg_num_convs=10,
      reg_fc_dim=1024, reg_samples_per_image=96, jitter=0.15,
      mask_iou_weight=0.3, max_level=3, roi_pooling="align",
      refined_nms_iou=0.0, reg_weighting="mean")
  m.rpn = _rpn(test_post_nms=700)
  m.test = _test(0.05)
  m.test.nms_iou = 0.3
  return m


def comask_2x():
  """CoMask R-50 MSFEM, the authors' 2x schedule: 24 epochs, SGD lr 0.01
  at batch 8 (scaled with global_batch), steps at epochs 20 and 23,
  linear warm-up over 1000 iterations, horizontal flip, no stuff maps."""
  c = get_base("comask")
  c.model_name = "comask_r50_mfpn_2x_coco"
  c.data.train.seg_dir = ""
  c.data.flip_prob = 0.5
  c.base_lr = 0.01
  c.base_batch = 8
  c.warmup_steps = 1000
  c.num_epochs = 24
  c.lr_decay_epochs = (20, 23)
  return c


def solo_model():
  """SOLO R-50-FPN (mmdet solo_r50_fpn_1x_coco): FPN P2..P6 without extra
  convs, SOLOHead with 7-conv GN towers; test as mmdet's test_cfg."""
  m = _common_model()
  m.type = "one_stage"
  del m["rpn"], m["delta_clamp"]
  m.mask_head = ml_collections.ConfigDict(dict(
      type="solo", feat_channels=256, stacked_convs=7,
      strides=(8, 8, 16, 32, 32),
      scale_ranges=((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048)),
      num_grids=(40, 36, 24, 16, 12), pos_scale=0.2, num_groups=32,
      focal_gamma=2.0, focal_alpha=0.25, loss_cls_weight=1.0,
      loss_mask_weight=3.0, max_positives=(0,) * 5))
  m.test = ml_collections.ConfigDict(dict(
      score_thr=0.1, mask_thr=0.5, filter_thr=0.05, nms_pre=500,
      max_per_img=100, kernel="gaussian", sigma=2.0))
  return m


def solo_1x():
  """SOLO R-50 1x: mmdet's schedule with lr 0.01 at batch 16."""
  c = get_base("solo")
  c.model_name = "solo_r50_fpn_1x_coco"
  c.base_lr = 0.01
  c.data.train.seg_dir = ""
  return c


def aggmask_model():
  """AggMask R-50-FPN (the authors' aggmask_r50_fpn, on mmdetection 1.x):
  SOLO's head whose cell masks aggregate the 5 neighbouring cells' mask
  logits and 16 context channels through a 3-layer CNN generated per
  cell (4 hidden channels, 3x3); mask_grids coarser than num_grids is the
  mask interpolation of their `-mask-grid` configs (e.g. 20, 18, 12, 8,
  6). test.max_cells: cells per level aggregated at test."""
  m = solo_model()
  # Every positive cell's mask is aggregated at the level's full mask
  # resolution (stride 4 at P2): 128 per image and level bounds the memory
  # (the exact cap, 9 cells x 100 instances, would need ~13 GB a level at
  # 800 x 1333); an image with more leaves the rest out of the mask loss.
  m.mask_head.update(type="aggmask", mask_grids=(), agg_layers=3,
                     agg_channels=4, agg_kernel=3, context_channels=16,
                     max_positives=(128,) * 5, residual=False,
                     generator_grad_scale=1.0, mask_activation="none")
  m.test.max_cells = 100
  return m


def _solo_3x(system, depth):
  """The 3x multi-scale schedule of mmdet's solo_r50_fpn_3x_coco and the
  AggMask authors' configs: shorter side drawn from 800..640 (long side
  1333), 36 epochs, lr 0.01 at batch 16, warm-up 500 iterations from
  1/3, decays at epochs 27 and 33, flip."""
  c = get_base(system)
  c.model_name = f"{system}_r{depth}_fpn_3x_coco"
  c.model.backbone.depth = depth
  c.data.train.seg_dir = ""
  c.data.train_scales = tuple((1333, s) for s in (800, 768, 736, 704, 672,
                                                  640))
  c.base_lr = 0.01
  c.warmup_steps = 500
  c.warmup_ratio = 1.0 / 3
  c.num_epochs = 36
  c.lr_decay_epochs = (27, 33)
  return c


def solo_3x(depth=50):
  return _solo_3x("solo", depth)


def aggmask_3x(depth):
  """AggMask R-`depth` 3x: the authors' schedule, gradients clipped at
  norm 35."""
  c = _solo_3x("aggmask", depth)
  c.grad_clip_norm = 35.0
  return c


def _shapes_budget(c):
  """The embedded shapes dataset and the CPU budget every *_tiny_shapes
  config shares: batch 8, warm-up 100, decays at 8/12 and 11/12 of the
  run, gradients clipped at 35."""
  d = c.data
  d.source = "shapes"
  # Empty paths are filled from data.shapes.root (data/sources.py).
  d.train.update(ann_file="", image_dir="", seg_dir="")
  d.val.update(ann_file="", image_dir="", seg_dir="")
  d.flip_prob = 0.5
  c.global_batch = 8
  c.base_batch = 8
  c.grad_clip_norm = 35.0
  c.warmup_steps = 100
  c.total_steps = 1200
  c.num_epochs = 12
  c.lr_decay_epochs = (8, 11)
  c.checkpoint_every = 300
  c.log_every = 50
  c.eval_batch_per_device = 8
  c.visualize_at_end = 6
  return c


def solo_tiny_shapes(system="solo"):
  """A small SOLO (or AggMask) on the embedded shapes (128 px): ResNet-18
  at quarter width with GN, 64-channel FPN, 4-conv 64-channel towers,
  grids sized to 128 px images. SOLO learns from far fewer examples per
  image than a two-stage model (a few positive cells per object), so it
  trains longer, with AdamW at lr 0.002: SOLO 2800 steps (0.5005 segm AP;
  SGD at lr 0.02: 0.475 at 4000, and with mmdet's ranges scaled to 128
  px 0.13 at 1200 steps, 0.31 at 3000), AggMask 2050 with the decays
  at 9/12 and 11/12 (0.505; 0.519 at 2300 with them at 8/12 and 11/12,
  0.459 at 2000; SGD: 0.360 at 2200, 0.523 at 4000 with caps of 12, 16,
  16, 4, 1).
  Objects go one level finer than those ranges: at that scale a 40-px
  object is 2-3 cells of the stride-16 map, and the category branch
  classified only half the positive cells right; 0.13 -> 0.18 segm AP at
  1200 steps."""
  c = _shapes_budget(get_base(system))
  c.model_name = f"{system}_tiny_shapes"
  m = c.model
  m.num_classes = 4
  m.backbone.update(depth=18, base_channels=16, frozen_stages=-1, norm="gn")
  m.neck.channels = 64
  m.mask_head.update(feat_channels=64, stacked_convs=4, num_groups=16,
                     num_grids=(12, 10, 8, 6, 4),
                     scale_ranges=((1, 32), (16, 64), (32, 128), (64, 256),
                                   (128, 512)))
  m.test.update(max_per_img=20, nms_pre=200)
  if system == "aggmask":
    # Positive cells per image over 480 training images, per level: mean
    # 2.6, 8.2, 5.4, 0.03, 0; at most 11, 22, 16, 4, 0. The aggregation
    # costs per slot times the level's map size, filled or not, so the
    # caps sit near the means: an image with more gives the mask loss a
    # random draw of its positives (SOLOHead.positive_slots), where caps
    # (12, 16, 16, 4, 1) kept every positive but for 3.5 % of the images
    # at twice the aggregation's cost.
    m.mask_head.max_positives = (4, 8, 8, 2, 1)
    # From scratch the authors' aggregation collapses to a constant mask
    # (models/dense_heads/aggmask_head.py): SOLO's mask plus a learned
    # correction, and the generator's outsized gradient scaled down (at
    # clip 35 and scale 1 one step saturates every mask to 1).
    m.mask_head.residual = True
    m.mask_head.generator_grad_scale = 0.01
    # AdamW moves every parameter by about the learning rate whatever the
    # scale of its gradient, so the generator gets a tenth of the rate:
    # at the full rate its mask loss stayed at Dice's maximum.
    c.lr_mults = (("learned_weights", 0.1),)
  d = c.data
  d.buckets = ((128, 128),)
  d.image_scale = (128, 128)
  d.max_instances = 12
  d.mask_crop_size = 32
  # The shortest schedules that reach 0.50 segm AP on the shapes set; the
  # schedules tried are in docs/results.md.
  c.update(optimizer="adamw", base_lr=0.002, weight_decay=0.05,
           warmup_ratio=1.0 / 3,
           total_steps=2800 if system == "solo" else 2050)
  if system == "aggmask":
    c.lr_decay_epochs = (9, 11)
  c.checkpoint_every = 1000
  return c


# Base models by name: the configs and the tests start from these.
SYSTEMS = {"mask_rcnn": mask_rcnn_model,
           "cascade_mask_rcnn": cascade_mask_rcnn_model,
           "htc": htc_model, "scnet": scnet_model, "mnc": mnc_model,
           "mask_rcnn_sfpn": mask_rcnn_sfpn_model,
           "cascade_mask_rcnn_sfpn": cascade_mask_rcnn_sfpn_model,
           "comask": comask_model, "solo": solo_model,
           "aggmask": aggmask_model}


def get_base(system):
  """A full config with mmdetection's R-50-FPN 1x defaults for `system`
  (a key of SYSTEMS)."""
  if system not in SYSTEMS:
    raise ValueError(f"unknown system {system!r}; one of {sorted(SYSTEMS)}")
  c = ml_collections.ConfigDict()
  c.model_name = system + "_r50_fpn_1x_coco"
  c.model = SYSTEMS[system]()

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
  # Training scales, one drawn per image (mmdet's RandomChoiceResize);
  # empty: image_scale. Each must fit within image_scale.
  d.train_scales = ()
  # Static canvases: landscape and portrait; each image goes to the one
  # that fits it, so a run compiles at most two programs per step kind.
  d.buckets = ((800, 1344), (1344, 800))
  d.max_instances = 100
  d.mask_crop_size = 112
  d.flip_prob = 0.5
  # Grain worker processes per process; -1: two per local device, none on
  # a machine of 4 cores or fewer (data/loader.py resolve_num_workers).
  d.num_workers = -1
  # The embedded dataset (data.source='shapes'), generated on first use.
  d.shapes = ml_collections.ConfigDict(dict(
      root="data/shapes", num_train=2000, num_val=200, image_size=128,
      max_objects=6, seed=0))

  # eval.py --tta: mmdet 2.x's SCNet/HTC test-time views, (long, short).
  c.test_aug = ml_collections.ConfigDict(dict(
      scales=((900, 600), (1200, 800), (1500, 1000), (1800, 1200),
              (2100, 1400)), flip=True))

  c.seed = 0
  c.global_batch = 16
  c.base_lr = 0.02
  c.base_batch = 16           # lr scales linearly with global_batch
  c.optimizer = "sgd"         # "sgd" or "adamw" (training/optim.py)
  c.momentum = 0.9            # sgd only
  c.weight_decay = 1e-4
  # ((key, factor), ...): the learning rate of every parameter whose path
  # (e.g. "mask_head/learned_weights/kernel") contains `key`, times factor
  # (the longest key that matches; mmdet's paramwise_cfg custom_keys).
  c.lr_mults = ()
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
  c.eval_every_steps = 0      # > 0: also every N steps, and keep workdir/best
  c.best_metric = "segm_AP"   # the metric (higher is better) of workdir/best
  c.progress = True           # tqdm bars when stdout is a terminal
  # Training a frozen stem (norm=frozen_bn, frozen_stages >= 0) from a
  # random init is refused unless this is set.
  c.allow_random_init = False
  c.eval_batch_per_device = 1
  c.visualize_at_end = 0      # prediction pictures written after that
  c.init_from = ""            # backbone weights or a converted checkpoint
  # init_from: a parameter of another shape there starts fresh instead of
  # being refused (fine-tuning to another class count).
  c.init_skip_mismatched = False
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
  m.neck.channels = 64
  m.rpn.update(train_pre_nms=300, train_post_nms=150, test_pre_nms=200,
               test_post_nms=100, num_samples=128)
  # 32 RoIs per image (8 positive slots): RoI heads dominate a CPU step,
  # and these images hold at most a handful of objects.
  m.roi_heads.update(num_samples=32, fc_dim=128, sampling_ratio=2)
  if "reg_fc_dim" in m.roi_heads:  # CoMask's mask-IoU FCs
    m.roi_heads.reg_fc_dim = 128
  if "max_level" in m.roi_heads:
    # CoMask's level rule goes by the box's share of the image: a box of
    # more than an eighth of it pools from P3, where at 128 px a 45-64 px
    # object spans 6-8 cells for a 14x14 head. Every RoI pools from P2,
    # as the FPN mapper sends every box under 224 px (a higher segm AP:
    # docs/models/comask.md).
    m.roi_heads.max_level = 0
  for section in (m.roi_heads, m.neck):
    if "semantic_head" in section:
      # Thing-only labels (no stuff maps): the classes and a background,
      # following model.num_classes when it is overridden.
      section.semantic_head.num_classes = m.get_ref("num_classes") + 1
  m.test.update(max_per_img=20, pre_nms_topk=1000)
  c.data.buckets = ((image_size, image_size),)
  c.data.image_scale = (image_size, image_size)
  c.test_aug.scales = tuple((s, s) for s in (image_size * 3 // 4,
                                             image_size, image_size * 5 // 4))
  c.data.max_instances = 12
  c.data.mask_crop_size = 32
  return c


def tiny_shapes(system):
  """A small `system` model on the embedded shapes dataset, sized to train
  on a 2-core CPU in minutes (docs/results.md has the measured AP)."""
  c = tiny(get_base(system), num_classes=4, image_size=128)
  c.model_name = f"{system}_tiny_shapes"
  # 4 of SCNet's 12 mask-head convs: the 12-conv head alone costs 60% of a
  # CPU step at this size.
  if "mask_num_convs" in c.model.roi_heads:
    c.model.roi_heads.mask_num_convs = 4
  # 4 of CoMask's 10 trunk convs: trained from scratch in the tiny
  # schedule, the 64-channel GroupNorm trunk learns more with 4
  # (docs/models/comask.md).
  if "reg_num_convs" in c.model.roi_heads:
    c.model.roi_heads.reg_num_convs = 4
  # About 10 minutes on 2 CPU cores.
  c.base_lr = 0.02
  return _shapes_budget(c)


def mnc_coco(depth, train_stages):
  """MNC R-`depth`-FPN on COCO with the authors' solver scaled to our
  batch: lr 0.001 per 8 images, momentum 0.9, weight decay 5e-4, one
  decay (x0.1) at 80 % of the run (20k of 25k iterations in
  models/VGG16/mnc_5stage/solver.prototxt), over 20 epochs (the length
  of SCNet's 20e runs; the paper's COCO schedule is not public)."""
  c = get_base("mnc")
  stages = "" if train_stages == 3 else f"_{train_stages}stage"
  c.model_name = f"mnc_r{depth}_fpn{stages}_coco"
  c.model.backbone.depth = depth
  c.model.roi_heads.train_stages = train_stages
  c.base_lr = 0.001
  c.base_batch = 8
  c.weight_decay = 5e-4
  c.num_epochs = 20
  c.lr_decay_epochs = (16,)
  return c


def mnc_tiny_shapes(train_stages):
  """The tiny MNC: the tiny_shapes model (32 RoIs per image, 30 %
  foreground), with as many steps as fit in about 10 minutes on 2 CPU
  cores: 1000 for 3-stage training, 650 for 5-stage (a step costs 1.55x,
  the RoI heads running twice)."""
  c = tiny_shapes("mnc")
  if train_stages != 3:
    c.model_name = f"mnc_{train_stages}stage_tiny_shapes"
  c.model.roi_heads.train_stages = train_stages
  c.total_steps = 1000 if train_stages == 3 else 650
  return c
