"""MNC: one jitted train step and inference call of the tiny 3- and 5-stage
models, the gradients the paper's end-to-end training needs (the stage-3
loss reaching the mask head, and through the box coordinates the RPN's
regression), and the refused configs."""
import jax
import numpy as np
import pytest

from scnet_jax.errors import ConfigError
from scnet_jax.models import build_model
from scnet_jax.training.state import init_variables
from tests.helpers import flat, losses_fn, max_abs, tiny_config, \
    train_batches

LOSSES = {"loss_rpn_cls", "loss_rpn_bbox", "loss_mask", "loss_cls",
          "loss_bbox"}


@pytest.mark.parametrize("stages", [3, 5])
def test_train_step_and_inference(stages):
  config = tiny_config("mnc", **{"model.roi_heads.train_stages": stages})
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  heads = set(params["roi_heads"])
  assert {"mask_head_0", "bbox_head_0"} <= heads
  assert "mask_head_1" not in heads and "bbox_head_1" not in heads
  (b,) = train_batches(config, 1)

  def loss(p):
    losses = model.apply({"params": p, "batch_stats": stats}, b,
                         method=model.loss,
                         rngs={"sample": jax.random.PRNGKey(0)})
    return sum(losses.values()), losses

  (_, losses), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      params)
  ext = {f"ext.{n}" for n in ("loss_mask", "loss_cls", "loss_bbox")}
  assert set(losses) == (LOSSES | ext if stages == 5 else LOSSES)
  assert all(np.isfinite(float(v)) for v in losses.values())
  assert np.isfinite(max_abs(grads))

  out = jax.jit(lambda p, x: model.apply(
      {"params": p, "batch_stats": stats}, x, method=model.predict))(
          params, b)
  d = config.model.test.max_per_img
  assert out.boxes.shape == (2, d, 4) and out.mask_kind == "box"
  assert out.masks.shape == (2, d, 28, 28)
  m = np.asarray(out.masks)
  assert np.all((m >= 0) & (m <= 1 + 1e-6))
  n = np.asarray(out.num_detections)
  assert np.all(np.asarray(out.boxes)[0, n[0]:] == 0)


def _grads(term, **overrides):
  losses_of, params, _ = losses_fn(tiny_config("mnc", **overrides))
  g = flat(jax.jit(jax.grad(lambda p: losses_of(p)[term]))(params))
  return lambda prefix: max(float(np.abs(np.asarray(v)).max())
                            for k, v in g.items() if k.startswith(prefix))


def test_stage3_loss_reaches_the_mask_head_and_the_rpn_regression():
  g = _grads("loss_cls")
  assert g("roi_heads/mask_head_0/mask_pred") > 0  # via the masked features
  assert g("roi_heads/mask_head_0/fc_mask") > 0
  assert g("rpn_head/rpn_reg") > 0         # through the RoI coordinates
  assert g("rpn_head/rpn_cls") == 0        # scores only rank proposals
  g = _grads("loss_mask")
  assert g("rpn_head/rpn_reg") > 0 and g("roi_heads/bbox_head_0") == 0


def test_without_box_grad_the_boxes_are_constants():
  g = _grads("loss_cls", **{"model.rpn.box_grad": False,
                            "model.roi_heads.box_grad": False})
  assert g("roi_heads/mask_head_0/mask_pred") > 0
  assert g("rpn_head/rpn_reg") == 0


def test_five_stage_losses_reach_stage_3_regression_and_the_rpn():
  # ext.loss_mask depends on the stage-3 deltas only through the boxes
  # they moved, and on the RPN through the boxes those started from.
  g = _grads("ext.loss_mask", **{"model.roi_heads.train_stages": 5})
  assert g("roi_heads/bbox_head_0/fc_reg") > 0
  assert g("rpn_head/rpn_reg") > 0


@pytest.mark.parametrize("field,value,match", [
    ("train_stages", 4, "train_stages"),
    ("test_stages", 1, "test_stages"),
    ("class_agnostic", True, "class_agnostic"),
    ("roi_size", 5, "roi_size"),
    # A field of the standard mask head MNC has no use for.
    ("mask_num_convs", 4, "takes no field 'mask_num_convs'"),
])
def test_refused_configs(field, value, match):
  config = tiny_config("mnc", **{f"model.roi_heads.{field}": value})
  with pytest.raises(ConfigError, match=match):
    build_model(config)
