"""Every family: one jitted training step and one jitted inference call on
a tiny config, finite losses with the spec's names, no recompilation, and
gradients only where the spec says they flow."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scnet_jax.models import build_model
from scnet_jax.training.state import init_variables
from tests.helpers import (grad_max, jit_train_and_predict, losses_fn,
                           max_abs, term_grads, tiny_config, total_loss_fn,
                           train_batches)

CASCADE = [f"s{s}.{n}" for s in range(3) for n in ("loss_cls", "loss_bbox")]
EXPECTED = {
    "mask_rcnn": {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox",
                  "loss_mask"},
    "cascade_mask_rcnn": {"loss_rpn_cls", "loss_rpn_bbox", *CASCADE,
                          "s0.loss_mask", "s1.loss_mask", "s2.loss_mask"},
    "htc": {"loss_rpn_cls", "loss_rpn_bbox", *CASCADE, "s0.loss_mask",
            "s1.loss_mask", "s2.loss_mask", "loss_semantic_seg"},
    "scnet": {"loss_rpn_cls", "loss_rpn_bbox", *CASCADE, "loss_mask",
              "loss_semantic_seg", "loss_glbctx"},
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_train_step_and_inference(family):
  config = tiny_config(family)
  losses, out = jit_train_and_predict(config)
  assert set(losses) == EXPECTED[family]
  d = config.model.test.max_per_img
  assert out.boxes.shape == (2, d, 4)
  assert out.masks.shape == (2, d, 28, 28) and out.mask_kind == "box"
  assert out.scores.shape == out.labels.shape == (2, d)
  assert out.num_detections.shape == (2,)
  n = np.asarray(out.num_detections)
  assert np.all((0 <= n) & (n <= d))
  m = np.asarray(out.masks)
  assert np.all((m >= 0) & (m <= 1))


def test_bfloat16_compute_and_parameters_keep_float32_losses():
  config = tiny_config("scnet", **{"model.dtype": "bfloat16",
                                   "model.param_dtype": "bfloat16"})
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("bfloat16")}
  (b,) = train_batches(config, 1)
  (_, losses), grads = jax.jit(jax.value_and_grad(
      total_loss_fn(model, stats), has_aux=True))(params, b,
                                                  jax.random.PRNGKey(0))
  assert all(v.dtype == jnp.float32 and np.isfinite(float(v))
             for v in losses.values())
  assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype("bfloat16")}
  assert np.isfinite(max_abs(grads))


def _grads_of(*terms, family="scnet", **overrides):
  losses_of, params, _ = losses_fn(tiny_config(family, **overrides))
  return list(term_grads(losses_of, params, terms).values())


def test_mask_loss_gradients_follow_the_spec():
  (g,) = _grads_of("loss_mask")
  # Through the feature relay into the last stage's shared FCs only.
  assert grad_max(g, "roi_heads/bbox_head_2/shared_fcs") > 0
  assert grad_max(g, "roi_heads/bbox_head_2/fc_cls") == 0
  assert grad_max(g, "roi_heads/bbox_head_0") == 0
  assert grad_max(g, "roi_heads/bbox_head_1") == 0
  assert grad_max(g, "roi_heads/feat_relay_head") > 0
  assert grad_max(g, "roi_heads/semantic_head/conv_embedding") > 0
  assert grad_max(g, "roi_heads/glbctx_head/convs") > 0
  assert grad_max(g, "roi_heads/mask_head_0") > 0
  assert grad_max(g, "rpn_head") == 0  # proposals carry no gradient


def test_no_gradient_between_stages_or_into_frozen_parts():
  overrides = {"model.backbone.norm": "frozen_bn",
               "model.backbone.frozen_stages": 1}
  g, rpn = _grads_of("s1.loss_bbox", "loss_rpn_cls", **overrides)
  assert grad_max(g, "roi_heads/bbox_head_1") > 0
  assert grad_max(g, "roi_heads/bbox_head_0") == 0  # refined: constants
  assert grad_max(g, "rpn_head") == 0
  assert grad_max(g, "backbone/conv1") == 0 and grad_max(g, "backbone/bn1") == 0
  assert grad_max(g, "backbone/layer1_") == 0
  assert grad_max(g, "backbone/layer2_") > 0
  assert grad_max(rpn, "rpn_head") > 0
  assert grad_max(rpn, "backbone/layer1_") == 0


def test_switches_remove_their_parts():
  config = tiny_config("scnet", **{"model.roi_heads.semantic": False,
                                   "model.roi_heads.global_context": False,
                                   "model.roi_heads.feature_relay": False})
  model = build_model(config)
  params, _ = init_variables(model, config, 0)
  assert not {"semantic_head", "glbctx_head", "feat_relay_head"} & set(
      params["roi_heads"])
  config = tiny_config("scnet",
                       **{"model.roi_heads.sample_consistency": "none"})
  params, _ = init_variables(build_model(config), config, 0)
  assert {"mask_head_0", "mask_head_1", "mask_head_2"} <= set(
      params["roi_heads"])
