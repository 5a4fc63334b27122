"""AggMask's head (models/dense_heads/aggmask_head.py): with the generated
weights set to an identity filter a cell's aggregated mask is SOLO's
mask of that cell; the mask loss reaches the weight generator and the
context branch, scaled where asked; parameter counts by hand; refused
combinations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scnet_jax import config_lib
from scnet_jax.errors import ConfigError
from scnet_jax.models import build_model
from scnet_jax.models.dense_heads.solo_head import SOLOHead
from scnet_jax.ops.aggregate import identity_weights, layer_shapes
from scnet_jax.training.state import (abstract_variables, init_variables,
                                      param_count)
from tests import helpers


def _config(**head):
  c = config_lib.aggmask_tiny_shapes()
  c.data.shapes.update(root=helpers.shapes_root(), num_train=48, num_val=16)
  c.global_batch = 2
  c.model.mask_head.update(head)
  return c


@pytest.mark.parametrize("residual", [False, True])
def test_identity_filter_gives_the_centre_cells_mask(residual):
  """The authors' form with an identity filter, and the residual form
  with a CNN that outputs zero, give SOLO's mask of the cell."""
  config = _config(residual=residual)
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  (batch,) = helpers.train_batches(config, 1)
  w = identity_weights(layer_shapes(21, 4, 3), np.eye(5)[2])
  if residual:
    w = np.zeros_like(w)
  rng = np.random.default_rng(0)
  grids = config.model.mask_head.num_grids
  cells = [jnp.asarray(rng.integers(0, s * s, (2, 6)), jnp.int32)
           for s in grids]

  def both(mdl, batch):
    """Per level: (aggregated with identity weights, SOLO's cell mask,
    those channels of the full conv_mask_list map), and the map
    extents."""
    head = mdl.mask_head
    out = head(*mdl.neck_and_canvas(batch["image"], batch["image_hw"]))
    return [(head.cell_mask_logits(out, level, c,
                                   jnp.broadcast_to(w, (2, 6, len(w)))),
             SOLOHead.cell_mask_logits(head, out, level, c),
             jnp.moveaxis(jnp.take_along_axis(
                 out["mask_logits"][level], c[:, None, None], -1), -1, 1),
             out["mask_extents"][level]) for level, c in enumerate(cells)]

  levels = jax.jit(lambda v, b: model.apply(v, b, method=both))(
      {"params": params, "batch_stats": stats}, batch)
  for got, want, full, ext in levels:
    # SOLOHead.mask_logits_at (the columns of the kernel) is the full map's
    # channels.
    np.testing.assert_allclose(np.asarray(want), np.asarray(full),
                               rtol=1e-5, atol=1e-5)
    ext = np.asarray(ext)
    for b in range(2):
      h, w_ = ext[b]
      np.testing.assert_allclose(np.asarray(got[b, :, :h, :w_]),
                                 np.asarray(want[b, :, :h, :w_]), atol=1e-5)


def test_mask_loss_reaches_the_generator_and_the_context():
  losses_of, params, _ = helpers.losses_fn(_config())
  grads = helpers.flat(jax.jit(jax.grad(
      lambda p: losses_of(p)["loss_mask"]))(params))
  for name in ("mask_head/learned_weights/", "mask_head/context_fusion_0/",
               "mask_head/context_fusion_3/", "mask_head/conv_mask_list_0/",
               "mask_head/mask_convs_0/"):
    g = helpers.grad_max(grads, name)
    assert np.isfinite(g) and g > 0, name
  # The category branch feeds the generator: the mask loss reaches it too.
  assert helpers.grad_max(grads, "mask_head/cls_convs_0/") > 0
  assert helpers.grad_max(grads, "mask_head/conv_cls/") == 0


def test_context_equals_the_authors_branch_in_torch():
  """The context channels against the authors' branch written with
  torch's ops on the same FPN levels and weights: each level resized to
  P2 (F.interpolate, bilinear, align corners), concatenated, 1x1 conv,
  GroupNorm, ReLU, 1x1 conv, ReLU (our first conv runs per level before
  the resize)."""
  import torch
  import torch.nn.functional as F
  config = _config()
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  # Random biases and norm affines: the initial zeros would hide them.
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(0, 0.5, x.shape), x.dtype), params)
  (batch,) = helpers.train_batches(config, 1)
  assert (batch["image_hw"] == batch["image"].shape[1:3]).all()

  def run(mdl, batch):
    feats, canvas = mdl.neck_and_canvas(batch["image"], batch["image_hw"])
    return feats, mdl.mask_head.context(feats, canvas)[0]

  feats, got = jax.jit(lambda v, b: model.apply(v, b, method=run))(
      {"params": params, "batch_stats": stats}, batch)
  p = {k: torch.from_numpy(np.array(v)) for k, v in
       helpers.flat(params["mask_head"]).items()}
  t = [torch.from_numpy(np.array(f)).permute(0, 3, 1, 2) for f in feats]
  x = torch.cat([F.interpolate(f, size=t[0].shape[2:], mode="bilinear",
                               align_corners=True) for f in t], 1)
  x = F.conv2d(x, p["context_fusion_0/kernel"].permute(3, 2, 0, 1),
               p["context_fusion_0/bias"])
  x = F.relu(F.group_norm(x, config.model.mask_head.num_groups,
                          p["context_fusion_1/scale"],
                          p["context_fusion_1/bias"]))
  x = F.relu(F.conv2d(x, p["context_fusion_3/kernel"].permute(3, 2, 0, 1),
                      p["context_fusion_3/bias"]))
  want = x.permute(0, 2, 3, 1).numpy()
  assert want.std() > 0.1
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_generator_grad_scale_scales_its_gradient_only():
  """The generated weights are unchanged; the gradient they send into the
  generator's parameters and into the category tower's features scales by
  the factor (test_mask_loss_reaches_the_generator_and_the_context shows
  the mask loss reaches them)."""
  config = _config()
  head = config.model.mask_head
  grid = head.num_grids[0]
  rng = np.random.default_rng(0)
  cls_feat = jnp.asarray(rng.normal(0, 1, (2, grid, grid, head.feat_channels)),
                         jnp.float32)
  cells = jnp.asarray(rng.integers(0, grid * grid, (2, 5)), jnp.int32)
  cotangent = jnp.asarray(rng.normal(0, 1, (2, 5, 1)), jnp.float32)
  out = []
  for scale in (1.0, 0.01):
    model = build_model(_config(generator_grad_scale=scale))
    params = abstract_variables(model, config)["params"]
    params = jax.tree.map(lambda v: jnp.asarray(
        np.random.default_rng(1).normal(0, 0.1, v.shape), v.dtype), params)

    def probe(p, x, model=model):
      w = model.apply({"params": p}, {"cls_feats": [x]}, 0, cells,
                      method=lambda m, *a: m.mask_head.generated_weights(*a))
      return jnp.sum(w * cotangent), w

    (_, w), (gp, gx) = jax.jit(jax.value_and_grad(
        probe, argnums=(0, 1), has_aux=True))(params, cls_feat)
    out.append((np.asarray(w), helpers.flat(gp), np.asarray(gx)))
  (w1, gp1, gx1), (w2, gp2, gx2) = out
  np.testing.assert_allclose(w2, w1, rtol=1e-6, atol=1e-7)
  assert np.abs(gx1).max() > 0
  scaled = lambda got, g: np.testing.assert_allclose(
      got, 0.01 * g, rtol=1e-3, atol=1e-5 * np.abs(0.01 * g).max())
  scaled(gx2, gx1)
  for name in ("kernel", "bias"):
    key = f"mask_head/learned_weights/{name}"
    assert np.abs(gp1[key]).max() > 0
    scaled(gp2[key], gp1[key])


def test_mask_interpolation_trains_and_predicts():
  # Traced (a gradient for every parameter, the output shapes): the
  # interpolation's neighbour tables are tests/ops/test_aggregate.py's,
  # and configs/aggmask_interp_tiny_shapes.py trains it (docs/results.md).
  losses, out = helpers.trace_train_and_predict(
      _config(mask_grids=(6, 5, 4, 3, 2)))
  assert "loss_mask" in losses
  assert out.masks.shape == (2, 20, 32, 32)


def test_per_level_positive_caps_leave_out_only_what_exceeds_them():
  """Caps at or above every level's positive count give the exact cap's
  losses; a cap of 1 at the busiest level changes only the mask loss."""
  exact_losses, params, _ = helpers.losses_fn(_config(max_positives=(0,) * 5))
  exact = jax.jit(exact_losses)(params)
  # The two training images of _config hold at most 6 objects: 54 cells.
  roomy = jax.jit(helpers.losses_fn(
      _config(max_positives=(54, 54, 54, 36, 16)))[0])(params)
  for name in exact:
    np.testing.assert_allclose(roomy[name], exact[name], rtol=1e-6)
  tight = jax.jit(helpers.losses_fn(
      _config(max_positives=(54, 1, 54, 36, 16)))[0])(params)
  np.testing.assert_allclose(tight["loss_cls"], exact["loss_cls"],
                             rtol=1e-6)
  assert abs(float(tight["loss_mask"]) - float(exact["loss_mask"])) > 1e-4


def test_a_cap_draws_which_positives_at_random():
  """Over a cap an image's mask-loss slots are a uniform draw from its
  positives, a new one per key; with room for all, every positive in
  raster order."""
  positive = np.zeros((1, 36), bool)
  cells = [3, 8, 14, 20, 33]
  positive[0, cells] = True
  head = SOLOHead(num_classes=4, channels=8, test=None, num_grids=(6,),
                  strides=(8,), scale_ranges=((1, 64),), max_positives=(3,))
  draw = jax.jit(lambda k: head.positive_slots(0, positive, 2, k[None]))
  picks = np.stack([np.asarray(draw(jax.random.PRNGKey(i)))[0]
                    for i in range(400)])
  assert all(len(set(p)) == 3 and set(p) <= set(cells) for p in picks)
  freq = np.array([np.mean(np.any(picks == c, 1)) for c in cells])
  # 3 of 5: each positive in 60 % of the draws (binomial sd 2.4 %).
  np.testing.assert_allclose(freq, 0.6, atol=0.1)
  roomy = head.clone(max_positives=(0,))
  np.testing.assert_array_equal(
      roomy.positive_slots(0, positive, 2, None)[0, :5], cells)


def test_parameter_counts_by_hand():
  """The R-50 head: SOLO's (mmdet's 36,301,232 in all) plus the weight
  generator (3x3 conv 256 -> 945 with bias) and the context branch (1x1
  conv 5 x 256 -> 256 with bias, GN affine 2 x 256, 1x1 conv 256 -> 16
  with bias)."""
  def count(system, **head):
    c = config_lib.get_base(system)
    c.model.mask_head.update(head)
    return param_count(abstract_variables(build_model(c), c)["params"])

  solo_total = count("solo")
  assert solo_total == 36_301_232
  generator = 256 * 3 * 3 * 945 + 945
  context = (5 * 256 * 256 + 256) + 2 * 256 + (256 * 16 + 16)
  assert count("aggmask") == solo_total + generator + context
  # Mask interpolation: S_m^2 mask channels instead of S_c^2, and 909
  # generated values (K = 4).
  fewer = sum((s * s - m * m) * (256 + 1) for s, m in
              zip((40, 36, 24, 16, 12), (20, 18, 12, 8, 6)))
  assert count("aggmask", mask_grids=(20, 18, 12, 8, 6)) == solo_total - \
      fewer + (256 * 9 * 909 + 909) + context


@pytest.mark.parametrize("field,value,words", [
    ("mask_grids", (12, 10, 8, 6), "one per level"),
    ("mask_grids", (12, 5, 4, 3, 2), "every level"),
    ("mask_grids", (13, 10, 8, 6, 4), "at most the category grid"),
    ("mask_activation", "tanh", "mask_activation: one of"),
    ("max_positives", (24, 24), "one per level"),
    ("max_positives", (24, 24, 24, 24, -1), "one per level"),
])
def test_refused_combinations(field, value, words):
  c = _config()
  c.model.mask_head[field] = value
  with pytest.raises(ConfigError, match=words):
    build_model(c)
  c = _config()
  c.model.test.max_cells = 0
  with pytest.raises(ConfigError, match="max_cells"):
    build_model(c)
