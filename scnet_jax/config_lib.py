"""The base configs the files in configs/ start from.

`get_base(system)` is a full config with mmdetection's R-50-FPN 1x
settings for `system`; a config file changes what its experiment changes,
the way mmdetection's files change their `_base_`. Every field can be
overridden on the command line (`--config.a.b=value`).

The model section has one sub-section per part, whose `type` picks the
class in models/registry.py. A part's defaults are its class's fields (the
one place they are written, equal to mmdetection's); a section here holds
`type` and only what the system changes.
`python -m scnet_jax.summary --config FILE --print_config` prints every
field of every part.
"""
import ml_collections

# mmdet's img_norm_cfg (RGB).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def _part(type_name, **changes):
  """A part's config section: its registry `type` and the fields that
  differ from the class's defaults."""
  return ml_collections.ConfigDict(dict(type=type_name, **changes))


def _semantic_head(conv_to_res=False):
  """The fused semantic head (HTC's; SCNet's with residual convs), a
  sub-section of the part that holds it: it has no class of its own, so
  its defaults are written here."""
  return ml_collections.ConfigDict(dict(
      num_classes=183, num_convs=4, conv_to_res=conv_to_res, fusion_level=1,
      ignore_label=255, loss_weight=0.2,
      # The CE's mean over the labelled pixels (mmdetection 2.x, how the
      # published HTC and SCNet were trained); False: over every pixel,
      # mmdetection 3.x's default (losses.semantic_ce).
      avg_non_ignore=True))


def thing_only_semantic_head(section, model):
  """Trains `section`'s semantic head on thing-only labels (no stuff
  maps): the classes and a background, following model.num_classes when
  it is overridden."""
  section.semantic_head.num_classes = model.get_ref("num_classes") + 1


def _test(score_thr, **changes):
  """Two-stage test settings (mmdetection's test_cfg.rcnn)."""
  test = ml_collections.ConfigDict(dict(
      score_thr=score_thr, nms_iou=0.5, max_per_img=100, pre_nms_topk=10000,
      mask_thr=0.5, min_box_size=0.0,
      # How box-relative masks enter the image: ops.paste.PASTE_RULES.
      mask_paste="mmdet"))
  test.update(changes)
  return test


def _model(detector, neck):
  m = ml_collections.ConfigDict()
  m.type = detector
  m.num_classes = 80  # the one place the class count is set
  # Activations and layer compute; the stored parameters (and optimiser
  # state). float32 or bfloat16 each (ops/precision.py).
  m.dtype = "float32"
  m.param_dtype = "float32"
  m.pixel_mean = PIXEL_MEAN
  m.pixel_std = PIXEL_STD
  m.backbone = _part("resnet")
  m.neck = neck
  return m


def _two_stage(roi_heads, test, rpn=None, neck=None):
  """A two-stage model on ResNet-50 (FPN unless `neck`)."""
  m = _model("two_stage", neck or _part("fpn"))
  m.delta_clamp = "symmetric"  # mmdet; torchvision clamps dw, dh from above
  m.rpn = rpn or _part("rpn")
  m.roi_heads = roi_heads
  m.test = test
  return m


def _mask_rcnn_rpn():
  """Mask R-CNN's base config disables the border check, keeps 1000
  training proposals and regresses boxes with L1 (beta 0)."""
  return _part("rpn", allowed_border=-1, train_post_nms=1000,
               loss_bbox_beta=0.0)


def mask_rcnn_model(neck=None):
  """Mask R-CNN R-50-FPN (mmdet mask-rcnn_r50_fpn_1x_coco)."""
  return _two_stage(_part("standard", loss_bbox_beta=0.0), _test(0.05),
                    rpn=_mask_rcnn_rpn(), neck=neck)


def cascade_mask_rcnn_model(neck=None):
  """Cascade Mask R-CNN R-50-FPN; its base config sets
  match_low_quality=False. The semantic branch is off (`semantic`) but
  configured, for the ablation that switches it on."""
  return _two_stage(_part("cascade", match_low_quality=False,
                          semantic_head=_semantic_head()), _test(0.05),
                    neck=neck)


def htc_model():
  """HTC R-50-FPN: the cascade with the semantic branch, interleaving and
  the mask information flow."""
  return _two_stage(_part("htc", semantic_head=_semantic_head()),
                    _test(0.001))


def scnet_model():
  """SCNet R-50-FPN; Table 2's switches are roi_heads.sample_consistency,
  feature_relay, global_context and semantic."""
  return _two_stage(
      _part("scnet", mask_num_convs=12, mask_conv_to_res=True,
            semantic_head=_semantic_head(conv_to_res=True)), _test(0.001))


def mnc_model():
  """MNC (Dai, He and Sun 2016) on R-50-FPN, with the authors' choices
  (`daijifeng001/MNC`, lib/mnc_config.py, mnc_5stage.yml; the RoI heads'
  defaults): 300 proposals whose boxes keep their gradient, 64 RoIs per
  image with 30 % foreground at IoU 0.5, stage-3 pathways of 2 FC 4096,
  mask BCE x2; test: 5-stage inference, NMS 0.3, masks voted and
  binarised at 0.4. roi_heads.train_stages (3 or 5) is the paper's 3- vs
  5-stage training."""
  # The authors bound each box-delta gradient from the boxes by 1 / 512
  # (proposal_layer.py and stage_bridge_layer.py, clip_base 512).
  clip = 1.0 / 512
  return _two_stage(
      _part("mnc", box_grad_clip=clip),
      _test(0.001, nms_iou=0.3, mask_thr=0.4),
      rpn=_part("rpn", train_post_nms=300, test_post_nms=300, box_grad=True,
                box_grad_clip=clip))


def _sfpn_neck():
  """SFPN (necks/sfpn.py, a reconstruction): FPN plus HTC's fused semantic
  head whose embedding is added to every level; alpha = loss_weight."""
  return _part("sfpn", semantic_head=_semantic_head())


def mask_rcnn_sfpn_model():
  """Mask R-CNN R-50 with SFPN (published 39.3 box / 35.8 mask AP)."""
  return mask_rcnn_model(neck=_sfpn_neck())


def cascade_mask_rcnn_sfpn_model():
  """Cascade Mask R-CNN with SFPN (published, Cascade R-CNN R-101: 43.5
  box AP)."""
  return cascade_mask_rcnn_model(neck=_sfpn_neck())


def comask_model():
  """CoMask R-50 with the MSFEM neck (the authors' CoMask_r50_mfpn_2x and
  D2Det COCO settings, the parts' defaults: 2000 training proposals, 700
  at test, NMS 0.3)."""
  return _two_stage(_part("comask"), _test(0.05, nms_iou=0.3),
                    rpn=_part("rpn", test_post_nms=700),
                    neck=_part("msfem"))


def comask_2x():
  """CoMask R-50 MSFEM, the authors' 2x schedule: 24 epochs, SGD lr 0.01
  at batch 8 (scaled with global_batch), steps at epochs 20 and 23,
  linear warm-up over 1000 iterations, horizontal flip, no stuff maps."""
  c = get_base("comask")
  c.model_name = "comask_r50_mfpn_2x_coco"
  c.data.train.seg_dir = ""
  c.base_lr = 0.01
  c.base_batch = 8
  c.warmup_steps = 1000
  c.num_epochs = 24
  c.lr_decay_epochs = (20, 23)
  return c


def _solo_test(**changes):
  """SOLO's test settings (mmdetection's test_cfg)."""
  test = ml_collections.ConfigDict(dict(
      score_thr=0.1, mask_thr=0.5, filter_thr=0.05, nms_pre=500,
      max_per_img=100, kernel="gaussian", sigma=2.0))
  test.update(changes)
  return test


def solo_model():
  """SOLO R-50-FPN (mmdet solo_r50_fpn_1x_coco): FPN P2..P6 without extra
  convs, SOLOHead with 7-conv GN towers; test as mmdet's test_cfg."""
  m = _model("one_stage", _part("fpn"))
  m.mask_head = _part("solo", max_positives=(0,) * 5)
  m.test = _solo_test()
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
  m = _model("one_stage", _part("fpn"))
  # Every positive cell's mask is aggregated at the level's full mask
  # resolution (stride 4 at P2): 128 per image and level bounds the memory
  # (the exact cap, 9 cells x 100 instances, would need ~13 GB a level at
  # 800 x 1333); an image with more leaves the rest out of the mask loss.
  m.mask_head = _part("aggmask", max_positives=(128,) * 5)
  m.test = _solo_test(max_cells=100)
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


def _shapes(c, name):
  """What every *_tiny_shapes config shares: the embedded shapes dataset
  (128 px images, at most 12 objects), batch 8, gradients clipped at 35,
  warm-up 100 steps; the run's length (total_steps) is its file's. The
  decays stay at 8/12 and 11/12 of the run."""
  c.model_name = name
  d = c.data
  d.source = "shapes"
  # Empty paths are filled from data.shapes.root (data/sources.py).
  d.train.update(ann_file="", image_dir="", seg_dir="")
  d.val.update(ann_file="", image_dir="", seg_dir="")
  d.buckets = ((128, 128),)
  d.image_scale = (128, 128)
  d.max_instances = 12
  d.mask_crop_size = 32
  c.global_batch = 8
  c.base_batch = 8
  c.grad_clip_norm = 35.0
  c.warmup_steps = 100
  c.log_every = 50
  c.eval_batch_per_device = 8
  c.visualize_at_end = 6
  # No ImageNet weights on a fresh machine: train from scratch with GN,
  # ResNet-18 at quarter width.
  c.model.num_classes = 4
  c.model.backbone.update(depth=18, base_channels=16, frozen_stages=-1,
                          norm="gn")
  c.model.neck.channels = 64
  return c


def solo_tiny_shapes(system="solo"):
  """A small SOLO (or AggMask) on the embedded shapes: 64-channel FPN,
  4-conv 64-channel towers, grids and scale ranges sized to 128 px images
  (objects go one level finer than mmdet's ranges scaled down). SOLO
  learns from far fewer examples per image than a two-stage model (a few
  positive cells per object), so it trains longer than they do, with
  AdamW; the schedules tried are in docs/models/solo.md."""
  c = _shapes(get_base(system), f"{system}_tiny_shapes")
  c.model.mask_head.update(feat_channels=64, stacked_convs=4, num_groups=16,
                           num_grids=(12, 10, 8, 6, 4),
                           scale_ranges=((1, 32), (16, 64), (32, 128),
                                         (64, 256), (128, 512)))
  c.model.test.update(max_per_img=20, nms_pre=200)
  c.update(optimizer="adamw", base_lr=0.002, weight_decay=0.05,
           warmup_ratio=1.0 / 3, checkpoint_every=1000)
  return c


def aggmask_tiny_shapes():
  """The tiny SOLO with AggMask's head, adapted to training from scratch
  (models/dense_heads/aggmask_head.py has why): per-level caps on the
  aggregated cells, a residual mask, the generator's gradient scaled by
  0.01 and its learning rate by 0.1; decays at 9/12 and 11/12."""
  c = solo_tiny_shapes("aggmask")
  # Positive cells per image over 480 training images, per level: mean
  # 2.6, 8.2, 5.4, 0.03, 0; at most 11, 22, 16, 4, 0. The aggregation
  # costs per slot times the level's map size, filled or not, so the
  # caps sit near the means: an image with more gives the mask loss a
  # random draw of its positives (SOLOHead.positive_slots).
  c.model.mask_head.update(max_positives=(4, 8, 8, 2, 1), residual=True,
                           generator_grad_scale=0.01)
  # AdamW moves every parameter by about the learning rate whatever the
  # scale of its gradient: at the full rate the generator's mask loss
  # stays at Dice's maximum.
  c.lr_mults = (("learned_weights", 0.1),)
  c.lr_decay_epochs = (9, 11)
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
  # How images and label maps are resized (data/resize.py): "cv2", as
  # mmdetection's pipelines, or "pil".
  d.resize = "cv2"
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
  # Where the linear warm-up reaches the full rate (training/optim.py):
  # "mmcv" at step warmup_steps (mmdetection 2.x, how the published
  # checkpoints were trained), "mmengine" one step earlier (mmdetection
  # 3.x's LinearLR with end=warmup_steps).
  c.warmup_rule = "mmcv"
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
  # jit over a mesh of every device, the step under jax.shard_map; or
  # "pmap" (JAX keeps jax.pmap in maintenance).
  c.parallel = "shard_map"
  c.evaluator = "faster_coco_eval"  # or "pycocotools"
  return c


def tiny_shapes(system):
  """A small two-stage `system` model on the embedded shapes dataset,
  sized for a 2-core CPU: 64-channel heads, few proposals, 32 RoIs per
  image (8 positive slots: RoI heads dominate a CPU step, and these
  images hold a handful of objects), every model switch as in the full
  model. The file adds what its system changes (docs/results.md has the
  measured AP)."""
  c = _shapes(get_base(system), f"{system}_tiny_shapes")
  m = c.model
  m.rpn.update(train_pre_nms=300, train_post_nms=150, test_pre_nms=200,
               test_post_nms=100, num_samples=128)
  m.roi_heads.update(num_samples=32, fc_dim=128, sampling_ratio=2)
  m.test.update(max_per_img=20, pre_nms_topk=1000)
  c.test_aug.scales = ((96, 96), (128, 128), (160, 160))
  c.checkpoint_every = 300
  return c


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
