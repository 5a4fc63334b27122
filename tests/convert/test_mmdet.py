"""mmdetection checkpoints: every key of the spec's state_dicts converts,
and each converted layer computes what the PyTorch layer computes with
those weights (convs, the (C, H, W) flatten orders, the transposed conv)."""
import json
import os
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scnet_jax import config_lib
from scnet_jax.convert.core import convert_state_dict
from scnet_jax.errors import CheckpointError
from scnet_jax.models.roi_heads.bbox_head import BBoxHead
from scnet_jax.models.roi_heads.feature_relay import FeatureRelayHead
from scnet_jax.models.roi_heads.mask_head import MaskHead
from tests.helpers import FIXTURES
from tests.xla_flags import xla_flags

FILES = {"scnet": "mmdet_scnet_r50_fpn_1x_coco.json",
         "htc": "mmdet_htc_r50_fpn_1x_coco.json",
         "cascade_mask_rcnn": "mmdet_cascade-mask-rcnn_r50_fpn_1x_coco.json",
         "mask_rcnn": "mmdet_mask-rcnn_r50_fpn_1x_coco.json"}


def _random_state_dict(family, seed=0):
  with open(os.path.join(FIXTURES, "checkpoints", FILES[family])) as f:
    shapes = json.load(f)["state_dict"]
  rng = np.random.default_rng(seed)
  out = {}
  for k, shape in shapes.items():
    if k.endswith("running_var"):
      out[k] = rng.uniform(0.5, 2, shape).astype(np.float32)
    else:
      out[k] = (rng.normal(0, 0.05, shape)).astype(np.float32)
  return out


def _abstract(family, **model_overrides):
  from scnet_jax.models import build_model, dummy_batch
  c = config_lib.get_base(family)
  c.model.update(model_overrides)
  model = build_model(c)
  shapes = jax.eval_shape(lambda b: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, b),
      dummy_batch(c, 1, (64, 64)))
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  return {"params": zeros["params"], "batch_stats": zeros["batch_stats"]}


@pytest.fixture(scope="module")
def scnet():
  sd = _random_state_dict("scnet")
  variables, _ = convert_state_dict(sd, "mmdet", _abstract("scnet"))
  return sd, variables


@pytest.mark.parametrize("family", ["htc", "cascade_mask_rcnn", "mask_rcnn"])
def test_every_key_converts(family):
  sd = _random_state_dict(family)
  variables, _ = convert_state_dict(sd, "mmdet", _abstract(family))
  n = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  with open(os.path.join(FIXTURES, "checkpoints", FILES[family])) as f:
    assert n == json.load(f)["total_params"]


def _p(variables, path):
  return flax.traverse_util.flatten_dict(variables["params"], sep="/")[path]


def _conv_ours(x, kernel, bias, stride=1):
  p = kernel.shape[0] // 2
  y = jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), ((p, p), (p, p)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return np.asarray(y + (0 if bias is None else bias))


@pytest.mark.parametrize("key", [
    "backbone.conv1", "backbone.layer2.0.conv2",
    "backbone.layer3.0.downsample.0", "neck.lateral_convs.3.conv",
    "neck.fpn_convs.1.conv", "rpn_head.rpn_reg",
    "roi_head.semantic_head.lateral_convs.2.conv",
    "roi_head.semantic_head.conv_logits", "roi_head.glbctx_head.convs.1.conv2",
    "roi_head.mask_head.convs.5.conv1", "roi_head.mask_head.conv_logits"])
def test_convs(scnet, key):
  sd, variables = scnet
  from scnet_jax.convert.layout import MMDET_RULES, map_module
  path, _ = map_module(key, MMDET_RULES)
  w = sd[key + ".weight"]
  b = sd.get(key + ".bias")
  x = np.random.default_rng(1).normal(size=(1, 9, 11, w.shape[1])).astype(
      np.float32)
  pad = w.shape[-1] // 2
  ref = F.conv2d(torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(w),
                 None if b is None else torch.tensor(b), padding=pad)
  ours = _conv_ours(x, _p(variables, path + "/kernel"),
                    None if b is None else _p(variables, path + "/bias"))
  np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(),
                             rtol=1e-4, atol=1e-4)


def test_batchnorm(scnet):
  sd, variables = scnet
  k = "backbone.layer4.2.bn3"
  x = np.random.default_rng(2).normal(size=(2, 3, 3, 2048)).astype(np.float32)
  ref = F.batch_norm(torch.tensor(x).permute(0, 3, 1, 2),
                     torch.tensor(sd[k + ".running_mean"]),
                     torch.tensor(sd[k + ".running_var"]),
                     torch.tensor(sd[k + ".weight"]),
                     torch.tensor(sd[k + ".bias"]), False, 0.0, 1e-5)
  bn = flax.linen.BatchNorm(use_running_average=True, epsilon=1e-5)
  stats = variables["batch_stats"]["backbone"]["layer4_2"]["bn3"]
  ours = bn.apply({"params": variables["params"]["backbone"]["layer4_2"][
      "bn3"], "batch_stats": stats}, x)
  np.testing.assert_allclose(np.asarray(ours),
                             ref.permute(0, 2, 3, 1).numpy(), atol=1e-4)


def test_bbox_head_with_chw_flatten(scnet):
  sd, variables = scnet
  x = np.random.default_rng(3).normal(size=(5, 7, 7, 256)).astype(np.float32)
  pre = "roi_head.bbox_head.2."
  t = lambda k: torch.tensor(sd[pre + k])
  with torch.no_grad():
    h = torch.tensor(x).permute(0, 3, 1, 2).flatten(1)  # mmdet: (C, H, W)
    h = F.relu(F.linear(h, t("shared_fcs.0.weight"), t("shared_fcs.0.bias")))
    h = F.relu(F.linear(h, t("shared_fcs.1.weight"), t("shared_fcs.1.bias")))
    cls = F.linear(h, t("fc_cls.weight"), t("fc_cls.bias"))
    reg = F.linear(h, t("fc_reg.weight"), t("fc_reg.bias"))
  roi_heads = variables["params"]["roi_heads"]
  ours = BBoxHead(num_classes=80).apply({"params": roi_heads["bbox_head_2"]},
                                        x)
  for o, r in zip(ours, (cls, reg, h)):
    np.testing.assert_allclose(np.asarray(o), r.numpy(), rtol=1e-4,
                               atol=1e-4)


def test_feature_relay_with_chw_output(scnet):
  sd, variables = scnet
  x = np.random.default_rng(4).normal(size=(3, 1024)).astype(np.float32)
  with torch.no_grad():
    y = F.linear(torch.tensor(x),
                 torch.tensor(sd["roi_head.feat_relay_head.fc.weight"]),
                 torch.tensor(sd["roi_head.feat_relay_head.fc.bias"]))
    y = F.interpolate(y.view(3, 256, 7, 7), scale_factor=2, mode="bilinear",
                      align_corners=True)
  ours = FeatureRelayHead().apply(
      {"params": variables["params"]["roi_heads"]["feat_relay_head"]}, x)
  np.testing.assert_allclose(np.asarray(ours), y.permute(0, 2, 3, 1).numpy(),
                             rtol=1e-4, atol=1e-4)


def test_scnet_mask_head_with_transposed_conv(scnet):
  sd, variables = scnet
  x = np.random.default_rng(5).normal(size=(2, 14, 14, 256)).astype(
      np.float32)
  pre = "roi_head.mask_head."
  t = lambda k: torch.tensor(sd[pre + k])
  with torch.no_grad():
    h = torch.tensor(x).permute(0, 3, 1, 2)
    for i in range(6):  # SimplifiedBasicBlock: conv2(relu(conv1(x))) + x
      r = F.relu(F.conv2d(h, t(f"convs.{i}.conv1.weight"),
                          t(f"convs.{i}.conv1.bias"), padding=1))
      h = F.conv2d(r, t(f"convs.{i}.conv2.weight"), t(f"convs.{i}.conv2.bias"),
                   padding=1) + h
    h = F.relu(F.conv_transpose2d(h, t("upsample.weight"), t("upsample.bias"),
                                  stride=2))
    logits = F.conv2d(h, t("conv_logits.weight"), t("conv_logits.bias"))
  ours, _ = MaskHead(num_classes=80, num_convs=12, conv_to_res=True).apply(
      {"params": variables["params"]["roi_heads"]["mask_head_0"]}, x)
  ref = logits.permute(0, 2, 3, 1).numpy()
  # 12 random residual convs grow activations to ~1e3: compare to scale.
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4,
                             atol=1e-5 * np.abs(ref).max())


def test_mismatches_are_refused_with_key_names():
  sd = _random_state_dict("scnet")
  target = _abstract("scnet", num_classes=20)
  with pytest.raises(CheckpointError, match=r"wrong shape .*fc_cls"):
    convert_state_dict(sd, "mmdet", target)
  variables, reinit = convert_state_dict(sd, "mmdet", target,
                                         reinit_mismatched_heads=True)
  assert any("fc_cls" in k for k in reinit)
  assert any("roi_heads/glbctx_head/fc" in k for k in reinit)
  del sd["neck.fpn_convs.2.conv.weight"]
  sd["roi_head.extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointError) as e:
    convert_state_dict(sd, "mmdet", _abstract("scnet"))
  assert "missing 1: params/neck/fpn_convs_2/kernel" in str(e.value)
  assert "unexpected 1: roi_head.extra.weight" in str(e.value)


def test_cli_writes_a_checkpoint_that_init_from_reads(tmp_path):
  import torchvision
  from scnet_jax.models import build_model
  from scnet_jax.training.init_weights import load_init_weights
  from scnet_jax.training.state import init_variables
  pth = tmp_path / "r50.pth"
  tv = torchvision.models.resnet50(weights=None)
  torch.save(tv.state_dict(), pth)
  root = os.path.join(os.path.dirname(__file__), "..", "..")
  cfg = os.path.join(root, "configs", "mask_rcnn_r50_fpn_1x_coco.py")
  out = subprocess.run([sys.executable, "-m", "scnet_jax.convert", "--config",
                        cfg, "--source", "torchvision", "--checkpoint",
                        str(pth), "--out", str(tmp_path / "w")],
                       capture_output=True, text=True, cwd=root,
                       env=dict(os.environ, XLA_FLAGS=xla_flags()))
  assert out.returncode == 0, out.stderr
  c = config_lib.get_base("mask_rcnn")
  c.data.buckets = ((64, 64),)
  params, _ = init_variables(build_model(c), c, 0)
  loaded = load_init_weights(c, params, str(tmp_path / "w"),
                             log=lambda *a: None)
  np.testing.assert_array_equal(
      loaded["backbone"]["layer3_4"]["conv2"]["kernel"],
      tv.state_dict()["layer3.4.conv2.weight"].numpy().transpose(2, 3, 1, 0))
  bad = subprocess.run([sys.executable, "-m", "scnet_jax.convert", "--config",
                        cfg, "--source", "mmdet", "--checkpoint", str(pth),
                        "--out", str(tmp_path / "x")], capture_output=True,
                       text=True, cwd=root, env=dict(os.environ, XLA_FLAGS=xla_flags()))
  assert bad.returncode == 2 and "unexpected" in bad.stderr
  assert "Traceback" not in bad.stderr
