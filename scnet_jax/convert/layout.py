"""PyTorch state_dict -> our Flax parameters: key renaming rules per source
and the array layout transforms.

Rules map a torch *module* name (the key without .weight/.bias/...) to our
Flax module path and a layout kind:
  conv          [O, I, kh, kw] -> kernel [kh, kw, I, O]
  linear        [O, I] -> kernel [I, O]
  linear_chw_in a linear layer that reads a (C, H, W)-flattened 7x7 RoI
                feature; we flatten (H, W, C), so its input rows permute
  linear_chw_out a linear layer whose output is reshaped to (C, H, W);
                we reshape (H, W, C), so its output columns permute
  deconv        ConvTranspose2d [I, O, 2, 2] -> kernel [a, b, I, O]
  bn            weight/bias -> params scale/bias; running stats ->
                batch_stats mean/var
  tv_cls, tv_reg, tv_mask_logits  torchvision's class layouts (background
                first, class-specific rows including background) -> ours
                (background last; classes only)
Only NumPy here: reading a .pth needs torch, the rest of the package not.
"""
import re

import numpy as np

ROI_C, ROI_HW = 256, 7


def _backbone_rules(prefix):
  p = re.escape(prefix)
  return [
      (p + r"conv1$", "backbone/conv1", "conv"),
      (p + r"bn1$", "backbone/bn1", "bn"),
      (p + r"layer(\d)\.(\d+)\.downsample\.0$",
       r"backbone/layer\1_\2/downsample_conv", "conv"),
      (p + r"layer(\d)\.(\d+)\.downsample\.1$",
       r"backbone/layer\1_\2/downsample_bn", "bn"),
      (p + r"layer(\d)\.(\d+)\.(conv\d)$", r"backbone/layer\1_\2/\3", "conv"),
      (p + r"layer(\d)\.(\d+)\.(bn\d)$", r"backbone/layer\1_\2/\3", "bn"),
  ]


def _stage(m):
  """Stage index of an mmdet head key ('bbox_head.2.x' or 'bbox_head.x')."""
  return m.group("s") or "0"


def _roi_heads(rules):
  """rules with their targets under the RoI heads' scope `roi_heads/`."""
  return [(pattern, (lambda m, r=repl: "roi_heads/" + r(m)) if callable(repl)
           else "roi_heads/" + repl, kind) for pattern, repl, kind in rules]


MMDET_RULES = _backbone_rules("backbone.") + [
    (r"neck\.(lateral_convs|fpn_convs)\.(\d)\.conv$", r"neck/\1_\2", "conv"),
    (r"rpn_head\.(rpn_conv|rpn_cls|rpn_reg)$", r"rpn_head/\1", "conv"),
] + _roi_heads([
    (r"roi_head\.bbox_head\.(?:(?P<s>\d)\.)?shared_fcs\.0$",
     lambda m: f"bbox_head_{_stage(m)}/shared_fcs_0", "linear_chw_in"),
    (r"roi_head\.bbox_head\.(?:(?P<s>\d)\.)?(?P<n>shared_fcs\.1|fc_cls|"
     r"fc_reg)$", lambda m: f"bbox_head_{_stage(m)}/"
     f"{m.group('n').replace('.', '_')}", "linear"),
    (r"roi_head\.mask_head\.(?:(?P<s>\d)\.)?convs\.(?P<i>\d+)\.conv$",
     lambda m: f"mask_head_{_stage(m)}/convs/convs_{m.group('i')}/conv",
     "conv"),
    (r"roi_head\.mask_head\.(?:(?P<s>\d)\.)?convs\.(?P<i>\d+)\."
     r"(?P<c>conv[12])$", lambda m: f"mask_head_{_stage(m)}/convs/"
     f"convs_{m.group('i')}/{m.group('c')}", "conv"),
    (r"roi_head\.mask_head\.(?:(?P<s>\d)\.)?upsample$",
     lambda m: f"mask_head_{_stage(m)}/upsample", "deconv"),
    (r"roi_head\.mask_head\.(?:(?P<s>\d)\.)?conv_logits$",
     lambda m: f"mask_head_{_stage(m)}/conv_logits", "conv"),
    (r"roi_head\.mask_head\.(?:(?P<s>\d)\.)?conv_res\.conv$",
     lambda m: f"mask_head_{_stage(m)}/conv_res/conv", "conv"),
    (r"roi_head\.semantic_head\.lateral_convs\.(\d)\.conv$",
     r"semantic_head/lateral_convs_\1/conv", "conv"),
    (r"roi_head\.semantic_head\.convs\.(\d+)\.conv$",
     r"semantic_head/convs/convs_\1/conv", "conv"),
    (r"roi_head\.semantic_head\.convs\.(\d+)\.(conv[12])$",
     r"semantic_head/convs/convs_\1/\2", "conv"),
    (r"roi_head\.semantic_head\.conv_embedding\.conv$",
     "semantic_head/conv_embedding/conv", "conv"),
    (r"roi_head\.semantic_head\.conv_logits$", "semantic_head/conv_logits",
     "conv"),
    (r"roi_head\.glbctx_head\.convs\.(\d+)\.(conv[12])$",
     r"glbctx_head/convs/convs_\1/\2", "conv"),
    (r"roi_head\.glbctx_head\.fc$", "glbctx_head/fc", "linear"),
    (r"roi_head\.feat_relay_head\.fc$", "feat_relay_head/fc",
     "linear_chw_out"),
]) + [
    # SOLO: GN weight/bias are BatchNorm's affine pair ("bn" kind).
    (r"mask_head\.(mask_convs|cls_convs)\.(\d)\.conv$",
     r"mask_head/\1_\2/conv", "conv"),
    (r"mask_head\.(mask_convs|cls_convs)\.(\d)\.gn$",
     r"mask_head/\1_\2/gn", "bn"),
    (r"mask_head\.conv_mask_list\.(\d)$", r"mask_head/conv_mask_list_\1",
     "conv"),
    (r"mask_head\.conv_cls$", "mask_head/conv_cls", "conv"),
]

TORCHVISION_MASKRCNN_RULES = _backbone_rules("backbone.body.") + [
    (r"backbone\.fpn\.inner_blocks\.(\d)\.0$", r"neck/lateral_convs_\1",
     "conv"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.0$", r"neck/fpn_convs_\1", "conv"),
    (r"rpn\.head\.conv\.0\.0$", "rpn_head/rpn_conv", "conv"),
    (r"rpn\.head\.cls_logits$", "rpn_head/rpn_cls", "conv"),
    (r"rpn\.head\.bbox_pred$", "rpn_head/rpn_reg", "conv"),
] + _roi_heads([
    (r"roi_heads\.box_head\.fc6$", "bbox_head_0/shared_fcs_0",
     "linear_chw_in"),
    (r"roi_heads\.box_head\.fc7$", "bbox_head_0/shared_fcs_1", "linear"),
    (r"roi_heads\.box_predictor\.cls_score$", "bbox_head_0/fc_cls",
     "tv_cls"),
    (r"roi_heads\.box_predictor\.bbox_pred$", "bbox_head_0/fc_reg",
     "tv_reg"),
    (r"roi_heads\.mask_head\.(\d)\.0$", r"mask_head_0/convs/convs_\1/conv",
     "conv"),
    (r"roi_heads\.mask_predictor\.conv5_mask$", "mask_head_0/upsample",
     "deconv"),
    (r"roi_heads\.mask_predictor\.mask_fcn_logits$",
     "mask_head_0/conv_logits", "tv_mask_logits"),
])

TORCHVISION_RESNET_RULES = _backbone_rules("")

RULES = {"mmdet": MMDET_RULES, "torchvision": TORCHVISION_MASKRCNN_RULES,
         "torchvision_resnet": TORCHVISION_RESNET_RULES}
IGNORED = re.compile(r"(num_batches_tracked$|^fc\.)")


def map_module(name, rules):
  """(flax module path, kind) of a torch module name, or None."""
  for pattern, repl, kind in rules:
    m = re.fullmatch(pattern, name)
    if m:
      return (repl(m) if callable(repl) else m.expand(repl)), kind
  return None


def _chw_in(w):
  o = w.shape[0]
  return w.reshape(o, ROI_C, ROI_HW, ROI_HW).transpose(0, 2, 3, 1).reshape(
      o, -1).T


def _chw_out_rows(x):
  """Reorder the leading (C, H, W)-ordered axis to (H, W, C)."""
  rest = x.shape[1:]
  return x.reshape(ROI_C, ROI_HW, ROI_HW, *rest).transpose(
      1, 2, 0, *range(3, 3 + len(rest))).reshape(-1, *rest)


def _bg_last(x):
  return np.concatenate([x[1:], x[:1]], axis=0)


def convert_tensor(kind, suffix, x):
  """One torch tensor -> [(collection, leaf name, array)]."""
  x = np.asarray(x, np.float32)
  if kind == "bn":
    return [{"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"),
             "running_var": ("batch_stats", "var")}[suffix] + (x,)]
  if suffix == "bias":
    if kind == "linear_chw_out":
      x = _chw_out_rows(x)
    elif kind == "tv_cls":
      x = _bg_last(x)
    elif kind == "tv_reg":
      x = x[4:]
    elif kind == "tv_mask_logits":
      x = x[1:]
    return [("params", "bias", x)]
  if kind in ("conv", "tv_mask_logits"):
    if kind == "tv_mask_logits":
      x = x[1:]
    return [("params", "kernel", x.transpose(2, 3, 1, 0))]
  if kind == "deconv":
    return [("params", "kernel", x.transpose(2, 3, 0, 1))]
  if kind == "linear":
    return [("params", "kernel", x.T)]
  if kind == "linear_chw_in":
    return [("params", "kernel", _chw_in(x))]
  if kind == "linear_chw_out":
    return [("params", "kernel", _chw_out_rows(x).T)]
  if kind == "tv_cls":
    return [("params", "kernel", _bg_last(x).T)]
  if kind == "tv_reg":
    return [("params", "kernel", x[4:].T)]
  raise ValueError(f"unknown layout kind {kind}")
