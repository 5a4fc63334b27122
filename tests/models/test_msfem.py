"""MSFEM (necks/msfem.py): parameter counts derived by hand from the layer
list (the CoMask authors' `SIM` module), layer by layer; shapes; bad fields
refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scnet_jax import config_lib
from scnet_jax.errors import ConfigError
from scnet_jax.models import build_model
from scnet_jax.models.necks.msfem import MSFEM, MSFEModule
from scnet_jax.summary import part_counts

C = 256
conv3 = lambda cin, cout, bias: 9 * cin * cout + (cout if bias else 0)
gn = lambda c: 2 * c


def module_count(branches, attention):
  """One level's module, written out from the spec's layer list."""
  n = 0
  if branches >= 2:   # sub-branch 1: b - 1 convs on x (C -> C)
    n += (branches - 1) * (conv3(C, C, True) + gn(C))
  for k in range(2, branches):  # sub-branch k: b - k convs, the first on 2C
    n += conv3(2 * C, C, True) + gn(C)
    n += (branches - k - 1) * (conv3(C, C, True) + gn(C))
  n += branches * C * C + C                      # 1x1 reduce, with bias
  gate = C * (C // 4) + (C // 4) * C             # two FCs, no biases
  rca = gate + conv3(C, C, False) + gn(C)        # + conv3x3 (no bias) + GN
  n += {"rca": rca, "ca": gate, "sca": 9 * 2 * 1 + rca, "none": 0}[attention]
  return n


def test_four_branch_rca_module_by_hand():
  # Written out for b = 4, RCA: the three sub-branches, reduce, RCA.
  expected = (3 * (9 * 256 * 256 + 256 + 2 * 256)          # 3 convs on x
              + (9 * 512 * 256 + 256 + 2 * 256)            # concat -> conv
              + (9 * 256 * 256 + 256 + 2 * 256)            #   -> conv
              + (9 * 512 * 256 + 256 + 2 * 256)            # concat -> conv
              + (1024 * 256 + 256)                         # 1x1 reduce
              + (256 * 64 + 64 * 256)                      # CA FCs
              + (9 * 256 * 256 + 2 * 256))                 # RCA conv + GN
  assert module_count(4, "rca") == expected == 5_608_704
  x = jnp.zeros((1, 16, 16, C))
  shapes = jax.eval_shape(lambda: MSFEModule(num_branches=4).init(
      jax.random.PRNGKey(0), x))
  assert sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)) == expected


@pytest.mark.parametrize("branches,attention", [
    (1, "rca"), (2, "rca"), (4, "rca"), (4, "ca"), (4, "sca"), (4, "none")])
def test_neck_counts_by_hand(branches, attention):
  c = config_lib.get_base("mask_rcnn")
  c.model.neck = config_lib.ml_collections.ConfigDict(dict(
      type="msfem", channels=256, strides=(4, 8, 16, 32, 64),
      num_branches=branches, attention=attention))
  laterals = sum(cin * C + C for cin in (256, 512, 1024, 2048))
  assert part_counts(c)["neck"] == laterals + 4 * module_count(branches,
                                                               attention)


def test_levels_keep_fpn_shapes():
  neck = MSFEM(channels=32, num_branches=4)
  inputs = [jnp.ones((2, 32 // s, 40 // s, 8 * s)) for s in (1, 2, 4, 8)]
  out, _ = jax.jit(lambda x: neck.init_with_output(jax.random.PRNGKey(0),
                                                   x))(inputs)
  assert [o.shape for o in out] == [(2, 32, 40, 32), (2, 16, 20, 32),
                                    (2, 8, 10, 32), (2, 4, 5, 32),
                                    (2, 2, 3, 32)]
  assert all(np.isfinite(np.asarray(o)).all() for o in out)


@pytest.mark.parametrize("field,value", [("num_branches", 0),
                                         ("attention", "se"),
                                         ("channels", 48)])
def test_bad_fields_are_refused(field, value):
  c = config_lib.get_base("mask_rcnn")
  c.model.neck = config_lib.ml_collections.ConfigDict(dict(
      type="msfem", channels=256, strides=(4, 8, 16, 32, 64),
      num_branches=4, attention="rca"))
  c.model.neck[field] = value
  with pytest.raises(ConfigError, match=f"model.neck.{field}"):
    build_model(c)


def _torch_sim(x, p, branches, groups):
  """The authors' SIM module with sca attention, written with torch's ops
  on one image's map x [1, C, H, W] alone; p: our parameters by name."""
  import torch
  import torch.nn.functional as F
  t = lambda name: torch.from_numpy(np.array(p[name]))
  conv = lambda v, name, stride=1, bias=True: F.conv2d(
      v, t(f"{name}/kernel").permute(3, 2, 0, 1),
      t(f"{name}/bias") if bias else None, stride=stride,
      padding=t(f"{name}/kernel").shape[0] // 2)
  gn = lambda v, name: F.group_norm(v, groups, t(f"{name}/scale"),
                                    t(f"{name}/bias"), eps=1e-5)
  outs = [x]
  for k in range(1, branches):
    v = x if k == 1 else torch.cat([outs[-1], x], 1)
    for j in range(branches - k):
      v = F.relu(gn(conv(v, f"branch{k}_{j}/conv", stride=2),
                    f"branch{k}_{j}/gn"))
    outs.append(F.interpolate(v, size=x.shape[2:], mode="bilinear",
                              align_corners=True))
  y = conv(torch.cat(outs, 1), "reduce")
  pooled = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)
  y = y * torch.sigmoid(conv(pooled, "refine_conv", bias=False))
  s = y.mean((2, 3))
  s = torch.sigmoid(F.linear(F.relu(F.linear(
      s, t("rca/gate/linear1/kernel").T)), t("rca/gate/linear2/kernel").T))
  z = y * s[:, :, None, None]
  r = gn(conv(z, "rca/conv2/conv", bias=False), "rca/conv2/gn")
  return F.relu(z + r)


def test_each_image_equals_the_authors_module_on_its_canvas_alone():
  """Two images in one [16, 16] bucket, one on a 12 x 10 canvas (odd
  sizes after the stride-2 convs), one on all of it: each image's output
  on its canvas equals the authors' module (torch's ops) run on that
  image alone (the FPN zeroes what lies off it)."""
  import torch
  branches, c = 4, 32
  module = MSFEModule(num_branches=branches, attention="sca")
  rng = np.random.default_rng(0)
  x = rng.normal(0, 1, (2, 16, 16, c)).astype(np.float32)
  x[0, 12:] = x[0, :, 10:] = 0
  ext = np.array([[12, 10], [16, 16]])
  ys, xs = (np.arange(16)[None, :] < ext[:, i:i + 1] for i in (0, 1))
  inside = jnp.asarray((ys[:, :, None] & xs[:, None, :])[..., None])
  params = module.init(jax.random.PRNGKey(0), x, inside)["params"]
  # Random biases and norm affines: the initial zeros and ones hide them.
  params = jax.tree.map(
      lambda v: jnp.asarray(rng.normal(0, 0.3, v.shape), v.dtype), params)
  out = np.asarray(jax.jit(lambda p, x, i: module.apply(
      {"params": p}, x, i))(params, x, inside))
  flat = {"/".join(str(k.key) for k in path): v for path, v in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  for b, (h, w) in enumerate(ext):
    image = torch.from_numpy(x[b:b + 1, :h, :w]).permute(0, 3, 1, 2)
    want = _torch_sim(image, flat, branches, 32)[0].permute(1, 2, 0).numpy()
    assert want.std() > 0.1
    np.testing.assert_allclose(out[b, :h, :w], want, rtol=1e-4, atol=1e-4)
