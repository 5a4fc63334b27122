"""SFPN (necks/sfpn.py, a reconstruction): its parts count what mmdet's
FPN and FusedSemanticHead count, its loss is torch's ignore-index CE, the
detectors built on it train and predict under jit, and the semantic loss
and the detection losses meet in the fused pyramid."""
import jax
import numpy as np
import pytest
import torch

from scnet_jax import config_lib
from scnet_jax.models import batch_keys, build_model
from scnet_jax.models.losses import semantic_ce
from scnet_jax.summary import part_counts
from tests.helpers import (flat, grad_max, jit_train_and_predict, losses_fn,
                           tiny_config, train_batches)
from tests.mmdet_reference import mmdet_import


def _torch_count(module):
  return sum(p.numel() for p in module.parameters())


def test_neck_counts_equal_mmdet_fpn_plus_fused_semantic_head():
  necks = mmdet_import("mmdet.models.necks")
  heads = mmdet_import("mmdet.models.roi_heads.mask_heads")
  fpn = necks.FPN(in_channels=[256, 512, 1024, 2048], out_channels=256,
                  num_outs=5)
  sem = heads.FusedSemanticHead(num_ins=5, fusion_level=1, num_convs=4,
                                in_channels=256, conv_out_channels=256,
                                num_classes=183)
  counts = part_counts(config_lib.get_base("mask_rcnn_sfpn"))
  assert counts["neck"] == _torch_count(fpn) + _torch_count(sem)
  plain = part_counts(config_lib.get_base("mask_rcnn"))
  assert {k: v for k, v in counts.items() if k != "neck"} == \
      {k: v for k, v in plain.items() if k != "neck"}


@pytest.mark.parametrize("avg_non_ignore", [True, False])
def test_semantic_ce_equals_mmdetections_cross_entropy(avg_non_ignore):
  """mmdetection 3.3's CrossEntropyLoss(ignore_index=255) with either
  normalisation (its default is avg_non_ignore=False)."""
  from tests.mmdet_reference import mmdet_import
  CrossEntropyLoss = mmdet_import("mmdet.models.losses").CrossEntropyLoss
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 5, 7)).astype(np.float32)
  gt = rng.integers(0, 7, size=(2, 6, 5)).astype(np.uint8)
  gt[0, :3] = 255
  ours = float(semantic_ce(logits, gt, 255, avg_non_ignore=avg_non_ignore))
  ref = CrossEntropyLoss(ignore_index=255, avg_non_ignore=avg_non_ignore)(
      torch.from_numpy(logits).permute(0, 3, 1, 2),
      torch.from_numpy(gt.astype(np.int64)))
  np.testing.assert_allclose(ours, float(ref), rtol=1e-5)


def test_reads_the_semantic_map_only_in_training():
  config = tiny_config("mask_rcnn_sfpn")
  assert "gt_semantic" in batch_keys(config, train=True)
  assert "gt_semantic" not in batch_keys(config, train=False)
  assert "gt_semantic" not in batch_keys(tiny_config("mask_rcnn"), True)


@pytest.mark.parametrize("family", ["mask_rcnn_sfpn", "cascade_mask_rcnn"])
def test_train_step_and_inference_compile_once(family):
  """Mask R-CNN and Cascade Mask R-CNN on SFPN."""
  config = tiny_config(family)
  config.model.neck = tiny_config(
      "mask_rcnn_sfpn").model.neck.copy_and_resolve_references()
  losses, out = jit_train_and_predict(config)
  assert "loss_semantic_seg" in losses
  assert out.masks.shape == (2, config.model.test.max_per_img, 28, 28)


def test_semantic_and_detection_losses_meet_in_the_fused_pyramid():
  losses_of, params, _ = losses_fn(tiny_config("mask_rcnn_sfpn"))
  grad = lambda term: flat(jax.jit(jax.grad(
      lambda p: losses_of(p)[term]))(params))
  g = grad("loss_semantic_seg")
  assert grad_max(g, "neck/semantic_head/conv_logits") > 0
  assert grad_max(g, "neck/fpn") > 0 and grad_max(g, "backbone") > 0
  # The embedding is not on the semantic loss's path.
  assert grad_max(g, "neck/semantic_head/conv_embedding") == 0
  assert grad_max(g, "rpn_head") == 0
  assert grad_max(g, "roi_heads/bbox_head_0") == 0
  # The detection losses train the semantic branch through the embedding
  # added to every level, not its logits.
  for term in ("loss_rpn_cls", "loss_cls", "loss_mask"):
    g = grad(term)
    assert grad_max(g, "neck/semantic_head/conv_embedding") > 0, term
    assert grad_max(g, "neck/semantic_head/conv_logits") == 0, term


def test_a_one_stage_model_trains_the_necks_semantic_loss():
  """SOLO on SFPN: the detector reads the neck's batch keys and adds its
  loss (traced, not compiled)."""
  config = config_lib.solo_tiny_shapes("solo")
  sfpn = tiny_config("mask_rcnn_sfpn")
  config.data = sfpn.data
  config.global_batch = 2
  config.model.neck = sfpn.model.neck
  assert "gt_semantic" in batch_keys(config, train=True)
  model = build_model(config)
  (batch,) = train_batches(config, 1)
  variables = jax.eval_shape(lambda b: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, b),
      batch)
  losses = jax.eval_shape(lambda v, b: model.apply(
      v, b, method=model.loss, rngs={"sample": jax.random.PRNGKey(0)}),
      variables, batch)
  assert {"loss_semantic_seg", "loss_cls", "loss_mask"} <= set(losses)
