"""How the heads start, against mmdetection 3.3's own modules after its
`init_weights()`: the mask head's upsample and conv_logits with
`mask_output_init="kaiming"` (FCNMaskHead.init_weights, what mmdetection
3.3 runs for Mask R-CNN and SCNet, and mmdetection 2.x for every head) and
`"torch"` (PyTorch's defaults, what it leaves the per-stage mask heads
of Cascade Mask R-CNN and HTC at), and SCNet's SimplifiedBasicBlock
(PyTorch's defaults, biases included). Compared: each parameter's
standard deviation (within four standard errors), its largest magnitude
(a uniform init's bound) and whether it is zero."""
import jax
import numpy as np
import pytest
import torch

from scnet_jax.models.layers import SimplifiedBasicBlock
from scnet_jax.models.roi_heads.mask_head import MaskHead
from tests.mmdet_models import CONFIGS, mmdet_config


def _mmdet_roi_head(family):
  """mmdetection's RoI head of `family`, built from its config and
  initialised by its own init_weights()."""
  cfg = mmdet_config(CONFIGS[family])
  from mmdet.registry import MODELS
  from mmengine.logging import MMLogger
  torch.manual_seed(0)
  head = MODELS.build(cfg.model.roi_head)
  MMLogger.get_current_instance().setLevel("WARNING")
  head.init_weights()
  return head


def _stats(x):
  x = np.asarray(x, np.float64)
  return x.std(), np.abs(x).max()


def _same_rule(ours, theirs, name):
  (s, m), (ts, tm) = _stats(ours), _stats(theirs)
  if ts == 0:
    assert s == 0, name
    return
  # Four standard errors of a sample's deviation (small for the kernels,
  # wide for a bias of 80 values, where the bound below decides).
  n = np.asarray(theirs).size
  assert abs(s / ts - 1) < max(0.02, 4 / np.sqrt(2 * n)), (name, s, ts)
  # A uniform init's bound, or a normal's tail at these sizes.
  assert m <= 1.001 * tm * (1.0 if tm < 3 * ts else 2.0), (name, m, tm)


def _torch_layout(kernel, transposed=False):
  """Our [kh, kw, in, out] kernel in torch's [out, in, kh, kw] (or a
  transposed conv's [in, out, kh, kw])."""
  k = np.asarray(kernel)
  return k.transpose(2, 3, 0, 1) if transposed else k.transpose(3, 2, 0, 1)


@pytest.mark.parametrize("family, rule", [("mask_rcnn", "kaiming"),
                                          ("htc", "torch")])
def test_mask_head_outputs_start_as_mmdetection_33(family, rule):
  head = _mmdet_roi_head(family).mask_head
  theirs = head[0] if isinstance(head, torch.nn.ModuleList) else head
  params = MaskHead(num_classes=80, output_init=rule).init(
      jax.random.PRNGKey(0), np.zeros((1, 14, 14, 256), np.float32))["params"]
  up, logits = params["upsample"], params["conv_logits"]
  _same_rule(_torch_layout(up["kernel"], True), theirs.upsample.weight.data,
             "upsample.weight")
  _same_rule(up["bias"], theirs.upsample.bias.data, "upsample.bias")
  _same_rule(_torch_layout(logits["kernel"]), theirs.conv_logits.weight.data,
             "conv_logits.weight")
  _same_rule(logits["bias"], theirs.conv_logits.bias.data, "conv_logits.bias")


def test_scnet_basic_blocks_start_as_mmdetection():
  theirs = _mmdet_roi_head("scnet").mask_head.convs[0]
  params = SimplifiedBasicBlock().init(
      jax.random.PRNGKey(0), np.zeros((1, 14, 14, 256), np.float32))["params"]
  for conv in ("conv1", "conv2"):
    t = getattr(theirs, conv)
    _same_rule(_torch_layout(params[conv]["kernel"]), t.weight.data,
               f"{conv}.weight")
    _same_rule(params[conv]["bias"], t.bias.data, f"{conv}.bias")
