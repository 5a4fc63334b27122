"""Every row of the SCNet paper's ablations (Tables 2-5) builds from
config, trains a step, and sends gradient where the paper's design says
(tiny configs, 64x64 images)."""
import jax
import numpy as np
import pytest

from scnet_jax.errors import ConfigError
from scnet_jax.models import build_model, resolve_model
from scnet_jax.training.state import init_variables
from tests.helpers import flat, losses_fn, tiny_config, train_batches

# Table 2's baseline: Cascade Mask R-CNN with the semantic branch, i.e.
# the SCNet heads with the three switches off and HTC's plain conv stacks
# (SCNet's residual mask head comes with its sample consistency).
OFF = {"model.roi_heads.sample_consistency": "none",
       "model.roi_heads.feature_relay": False,
       "model.roi_heads.global_context": False,
       "model.roi_heads.mask_conv_to_res": False,
       "model.roi_heads.semantic_head.conv_to_res": False}


def _row(**overrides):
  """SCNet's RoI heads on the tiny config with the row's switches."""
  return tiny_config("scnet", **{"data.buckets": ((64, 64),),
                                 "data.image_scale": (64, 64),
                                 **overrides})


def _train_step(config, terms=()):
  """(params, losses, gradient of the total, {term: its gradient}) of one
  step; gradients flattened to 'module/.../leaf'."""
  losses_of, params, _ = losses_fn(config)

  @jax.jit
  def step(p):
    losses, vjp = jax.vjp(losses_of, p)
    one = lambda names: vjp({k: np.float32(k in names) for k in losses})[0]
    return losses, one(set(losses)), {t: one({t}) for t in terms}

  losses, total, per_term = step(params)
  assert all(np.isfinite(float(v)) for v in losses.values())
  return (flat(params), {k: float(v) for k, v in losses.items()},
          flat(total), {t: flat(g) for t, g in per_term.items()})


def _reached(grads, prefix):
  """Whether any gradient under `prefix` is non-zero (prefix must exist)."""
  vals = [np.abs(np.asarray(v)).max() for k, v in grads.items()
          if k.startswith(prefix)]
  assert vals, prefix
  return max(vals) > 0


def _modules(params):
  """The top-level parts of flat parameter names, the RoI heads' by their
  submodules ("roi_heads/bbox_head_0")."""
  return {"/".join(k.split("/")[:2 if k.startswith("roi_heads/") else 1])
          for k in params}


CASCADE = {"backbone", "neck", "rpn_head", "roi_heads/bbox_head_0",
           "roi_heads/bbox_head_1", "roi_heads/bbox_head_2"}


def test_table2_baseline_is_cascade_with_semantic_branch():
  params, losses, g, _ = _train_step(_row(**OFF))
  assert _modules(params) == CASCADE | {
      "roi_heads/mask_head_0", "roi_heads/mask_head_1",
      "roi_heads/mask_head_2", "roi_heads/semantic_head"}
  assert {"s0.loss_mask", "s1.loss_mask", "s2.loss_mask",
          "loss_semantic_seg"} <= set(losses)
  assert all(_reached(g, f"roi_heads/mask_head_{s}") for s in range(3))
  # The same parameters as Cascade Mask R-CNN with its semantic branch on.
  cascade = tiny_config("cascade_mask_rcnn",
                        **{"model.roi_heads.semantic": True})
  ref, _ = init_variables(build_model(cascade), cascade, 0)
  assert set(flat(ref)) == set(params)


def test_table2_sample_consistency_alone():
  params, losses, g, _ = _train_step(
      _row(**{**OFF, "model.roi_heads.sample_consistency": "single"}))
  assert _modules(params) == CASCADE | {"roi_heads/mask_head_0",
                                        "roi_heads/semantic_head"}
  assert "loss_mask" in losses and "s0.loss_mask" not in losses
  assert _reached(g, "roi_heads/mask_head_0")


def test_table2_and_table4_feature_relay_without_sample_consistency():
  # One relay per stage, each from its own box stage to its own mask head.
  params, _, _, per = _train_step(
      _row(**{**OFF, "model.roi_heads.feature_relay": True}),
      terms=("s1.loss_mask",))
  assert {"roi_heads/feat_relay_head_0", "roi_heads/feat_relay_head_1",
          "roi_heads/feat_relay_head_2"} <= _modules(params)
  g = per["s1.loss_mask"]
  assert _reached(g, "roi_heads/feat_relay_head_1")
  assert _reached(g, "roi_heads/bbox_head_1/shared_fcs")
  assert not _reached(g, "roi_heads/bbox_head_1/fc_cls")
  for s in (0, 2):
    assert not _reached(g, f"roi_heads/feat_relay_head_{s}")
    assert not _reached(g, f"roi_heads/bbox_head_{s}")


def test_table2_global_context_alone():
  params, losses, g, per = _train_step(
      _row(**{**OFF, "model.roi_heads.global_context": True}),
      terms=("s0.loss_cls",))
  assert "roi_heads/glbctx_head" in _modules(params)
  assert "loss_glbctx" in losses
  assert _reached(g, "roi_heads/glbctx_head/fc")
  # Its pooled feature is fused into the box RoI features.
  assert _reached(per["s0.loss_cls"], "roi_heads/glbctx_head/convs")
  assert not _reached(per["s0.loss_cls"], "roi_heads/glbctx_head/fc")


def test_table2_all_three_is_scnet():
  """Also Table 5's chosen global-context loss weight, 3 (the default)."""
  config = _row()
  assert resolve_model(config.model).roi_heads.glbctx_loss_weight == 3.0
  params, losses, total, per = _train_step(config, terms=("loss_mask",))
  assert _modules(params) == CASCADE | {
      "roi_heads/mask_head_0", "roi_heads/semantic_head",
      "roi_heads/glbctx_head", "roi_heads/feat_relay_head"}
  g = per["loss_mask"]
  assert _reached(g, "roi_heads/feat_relay_head")
  assert _reached(g, "roi_heads/glbctx_head")
  assert _reached(g, "roi_heads/bbox_head_2/shared_fcs")
  assert not _reached(g, "roi_heads/bbox_head_0")
  assert not _reached(g, "roi_heads/bbox_head_1")
  assert losses["loss_glbctx"] > 0
  assert _reached(total, "roi_heads/glbctx_head/convs")
  assert _reached(total, "roi_heads/glbctx_head/fc")


def test_table3_naive_sample_consistency_feeds_every_head_the_last_stage():
  """Three mask heads after the last stage: with equal weights their
  losses are the stage weights times one loss, as they see the same
  samples; per-stage heads (the baseline) see different ones."""
  def losses_with_equal_heads(mode):
    losses_of, params, _ = losses_fn(
        _row(**{**OFF, "model.roi_heads.sample_consistency": mode}))
    heads = params["roi_heads"]
    params = dict(params, roi_heads=dict(
        heads, mask_head_1=heads["mask_head_0"],
        mask_head_2=heads["mask_head_0"]))
    losses = jax.jit(losses_of)(params)
    return [float(losses[f"s{h}.loss_mask"]) for h in range(3)]

  naive = losses_with_equal_heads("naive")
  np.testing.assert_allclose(np.array(naive) / naive[0], [1, 0.5, 0.25],
                             rtol=1e-5)
  per_stage = losses_with_equal_heads("none")
  assert abs(per_stage[1] / per_stage[0] - 0.5) > 1e-3


def test_table4_feature_relay_on_mask_rcnn():
  config = _row(**{"model.roi_heads.stage_iou_thrs": (0.5,),
                   "model.roi_heads.stage_loss_weights": (1.0,),
                   "model.roi_heads.stage_target_stds": ((0.1, 0.1, 0.2,
                                                          0.2),),
                   "model.roi_heads.class_agnostic": False,
                   "model.roi_heads.semantic": False,
                   "model.roi_heads.global_context": False})
  params, losses, _, per = _train_step(config, terms=("loss_mask",))
  assert _modules(params) == {"backbone", "neck", "rpn_head",
                              "roi_heads/bbox_head_0", "roi_heads/mask_head_0",
                              "roi_heads/feat_relay_head"}
  assert {"loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
  g = per["loss_mask"]
  assert _reached(g, "roi_heads/feat_relay_head")
  assert _reached(g, "roi_heads/bbox_head_0/shared_fcs")
  assert not _reached(g, "roi_heads/bbox_head_0/fc_cls")


def test_table5_global_context_loss_weight_zero():
  """Weight 0 keeps the branch: its feature trains through the fusion,
  its classifier gets nothing (weight 3: test_table2_all_three_is_scnet)."""
  params, losses, g, _ = _train_step(
      _row(**{"model.roi_heads.glbctx_loss_weight": 0.0}))
  assert "roi_heads/glbctx_head" in _modules(params)
  assert losses["loss_glbctx"] == 0
  assert _reached(g, "roi_heads/glbctx_head/convs")
  assert not _reached(g, "roi_heads/glbctx_head/fc")


def test_table5_global_context_absent():
  """No branch, no loss: read from the traced step (the step itself is
  Table 2's rows' with the switch off)."""
  config = _row(**{"model.roi_heads.global_context": False})
  model = build_model(config)
  shapes = jax.eval_shape(lambda b: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)},
      b, method=model.loss), *train_batches(config, 1))
  assert "glbctx_head" not in shapes["params"]["roi_heads"]
  losses = jax.eval_shape(lambda v, b: model.apply(
      v, b, method=model.loss, rngs={"sample": jax.random.PRNGKey(0)}),
      shapes, *train_batches(config, 1))
  assert "loss_glbctx" not in losses and "loss_semantic_seg" in losses


@pytest.mark.parametrize("system,field,value,message", [
    ("cascade_mask_rcnn", "class_agnostic", False, "needs one box stage"),
    ("htc", "stage_iou_thrs", (0.5,), "need one entry per stage"),
    ("scnet", "sample_consistency", "sometimes", "one of"),
    ("mask_rcnn", "semantic", True, "takes no field 'semantic'"),
    ("mask_rcnn", "channels", 8, "set by the detector"),
    ("scnet", "type", "cascades", "unknown 'cascades'"),
])
def test_impossible_combinations_are_refused_at_build(system, field, value,
                                                     message):
  config = tiny_config(system)
  config.model.roi_heads[field] = value
  with pytest.raises(ConfigError, match=message):
    build_model(config)


def test_interleaving_with_one_stage_is_refused():
  config = tiny_config("htc", **{
      "model.roi_heads.stage_iou_thrs": (0.5,),
      "model.roi_heads.stage_loss_weights": (1.0,),
      "model.roi_heads.stage_target_stds": ((0.1, 0.1, 0.2, 0.2),)})
  with pytest.raises(ConfigError, match="at least two box stages"):
    build_model(config)
