"""RoIAlign against torchvision.ops.roi_align."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from scnet_jax import ops


def _random_rois(rng, k, extent):
  xy = rng.uniform(-0.2 * extent, extent, size=(k, 2))
  wh = rng.uniform(0, 0.6 * extent, size=(k, 2))
  rois = np.concatenate([xy, xy + wh], 1).astype(np.float32)
  rois[0] = [10, 10, 10, 10]            # degenerate: zero size
  rois[1] = [-50, -50, -20, -30]        # fully outside the map
  rois[2] = [5, 7, 3, 2]                # inverted corners
  rois[3] = [0, 0, extent, extent]      # whole map
  return rois


def _torch_ref(feat_hwc, rois, size, scale, sr, aligned):
  f = torch.tensor(feat_hwc).permute(2, 0, 1)[None]
  out = torchvision.ops.roi_align(f, [torch.tensor(rois)], size, scale, sr,
                                  aligned)
  return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 4])
@pytest.mark.parametrize("size", [7, (14, 9)])
def test_matches_torchvision(aligned, sampling_ratio, size):
  rng = np.random.default_rng(sampling_ratio)
  feat = rng.normal(size=(19, 23, 8)).astype(np.float32)
  rois = _random_rois(rng, 60, 180.0)
  fn = jax.jit(lambda f, r: ops.roi_align(f, r, size, 0.125, sampling_ratio,
                                          aligned, max_grid=16))
  out = np.asarray(fn(feat, rois))
  ref = _torch_ref(feat, rois, size, 0.125, sampling_ratio, aligned)
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_empty_rois_and_bfloat16():
  feat = np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32)
  out = ops.roi_align(jnp.asarray(feat), jnp.zeros((0, 4)), 7, 1.0, 2)
  assert out.shape == (0, 7, 7, 4)
  rois = np.array([[1, 1, 6, 5]], np.float32)
  bf = ops.roi_align(jnp.asarray(feat, jnp.bfloat16), rois, 7, 1.0, 2)
  assert bf.dtype == jnp.bfloat16
  ref = _torch_ref(feat, rois, 7, 1.0, 2, True)
  np.testing.assert_allclose(np.asarray(bf, np.float32), ref, atol=5e-2)


@pytest.mark.parametrize("method", ["gather", "dense"])
def test_batch_and_vmap_match_torchvision_per_image(method):
  # The batched call folds images into one gather; vmap must agree too.
  rng = np.random.default_rng(3)
  feats = rng.normal(size=(3, 16, 16, 4)).astype(np.float32)
  rois = np.stack([_random_rois(rng, 10, 64.0) for _ in range(3)])
  call = lambda f, r: ops.roi_align(f, r, 7, 0.25, 2, method=method)
  for out in (jax.jit(call)(feats, rois), jax.vmap(call)(feats, rois)):
    assert out.shape == (3, 10, 7, 7, 4)
    for i in range(3):
      np.testing.assert_allclose(
          out[i], _torch_ref(feats[i], rois[i], 7, 0.25, 2, True),
          atol=1e-4)


def test_chunked_gather_equals_one_gather(monkeypatch):
  import sys
  mod = sys.modules["scnet_jax.ops.roi_align"]
  rng = np.random.default_rng(5)
  feat = rng.normal(size=(20, 24, 8)).astype(np.float32)
  rois = _random_rois(rng, 37, 150.0)
  whole = ops.roi_align(feat, rois, 7, 0.125, 2, method="gather")
  monkeypatch.setattr(mod, "MAX_GATHER_ELEMENTS", 7 * 7 * 16 * 8 * 5)
  chunked = jax.jit(lambda f, r: ops.roi_align(f, r, 7, 0.125, 2,
                                               method="gather"))(feat, rois)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole),
                             atol=1e-5)


def test_adaptive_cap_falls_back_to_even_samples():
  # A RoI needing 6 samples per bin with max_grid=3 equals sampling_ratio=3.
  rng = np.random.default_rng(1)
  feat = rng.normal(size=(64, 64, 2)).astype(np.float32)
  rois = np.array([[0, 0, 42, 42]], np.float32)
  capped = ops.roi_align(feat, rois, 7, 1.0, 0, max_grid=3)
  np.testing.assert_allclose(capped, _torch_ref(feat, rois, 7, 1.0, 3, True),
                             atol=1e-5)


@pytest.mark.parametrize("batch", [None, 2])
def test_multilevel_matches_torchvision_multiscale(batch):
  # torchvision's MultiScaleRoIAlign: canonical 224 at level 4, aligned=False.
  from torchvision.ops import MultiScaleRoIAlign
  rng = np.random.default_rng(2)
  size = 256
  strides = [4, 8, 16, 32]
  n = batch or 1
  feats = [rng.normal(size=(n, size // s, size // s, 4)).astype(np.float32)
           for s in strides]
  xy = rng.uniform(0, 200, size=(n, 80, 2))
  wh = np.exp(rng.uniform(np.log(4), np.log(250), size=(n, 80, 2)))
  rois = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
  tfeats = {str(i): torch.tensor(f).permute(0, 3, 1, 2)
            for i, f in enumerate(feats)}
  ref = pooler(tfeats, [torch.tensor(r) for r in rois], [(size, size)] * n)
  ref = ref.permute(0, 2, 3, 1).numpy().reshape(n, 80, 7, 7, 4)
  if batch is None:
    feats, rois, ref = [f[0] for f in feats], rois[0], ref[0]
  out = jax.jit(lambda fs, r: ops.multilevel_roi_align(
      fs, r, 7, strides, 2, aligned=False, mapper="torchvision"))(feats, rois)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_level_mapping_mmdet_rule():
  rois = np.array([[0, 0, 111, 111], [0, 0, 112, 112], [0, 0, 224, 224],
                   [0, 0, 447, 447], [0, 0, 448, 448], [0, 0, 2000, 2000],
                   [0, 0, 1, 1]], np.float32)
  lvl = np.asarray(ops.map_roi_levels(rois, 4, 56))
  np.testing.assert_array_equal(lvl, [0, 1, 2, 2, 3, 3, 0])


@pytest.mark.parametrize("bad", [
    dict(features=np.zeros((4, 4)), rois=np.zeros((1, 4)), output_size=7),
    dict(features=np.zeros((4, 4, 1)), rois=np.zeros((1, 5)), output_size=7),
    dict(features=np.zeros((4, 4, 1)), rois=np.zeros((1, 4)), output_size=-1),
    dict(features=np.zeros((2, 4, 4, 1)), rois=np.zeros((3, 1, 4)),
         output_size=7),
])
def test_bad_input_raises_clear_error(bad):
  with pytest.raises(ValueError, match="roi_align"):
    jax.jit(lambda f, r: ops.roi_align(f, r, bad["output_size"], 1.0, 2))(
        bad["features"], bad["rois"])


def _sample_positions(rois, size, scale, sr):
  """Per-axis sample coordinates of every RoI (torchvision's formula), to
  keep finite-difference boxes away from the kinks of bilinear sampling."""
  oh, ow = size
  out = []
  for x1, y1, x2, y2 in rois.astype(np.float64):
    axes = []
    for lo, hi, n in ((y1, y2, oh), (x1, x2, ow)):
      start, length = lo * scale - 0.5, (hi - lo) * scale
      g = sr if sr > 0 else int(np.ceil(length / n))
      b = length / n
      axes.append((start + np.arange(n)[:, None] * b +
                   (np.arange(g)[None] + 0.5) * b / g).ravel())
      axes.append(np.array([length / n]))  # the adaptive count's argument
    out.append(np.concatenate(axes))
  return out


def _smooth_rois(rng, k, extent, size, scale, sr, margin=0.02):
  rois = []
  while len(rois) < k:
    xy = rng.uniform(-0.1 * extent, 0.8 * extent, size=2)
    wh = rng.uniform(0.05 * extent, 0.6 * extent, size=2)
    r = np.concatenate([xy, xy + wh])
    pos = _sample_positions(r[None], size, scale, sr)[0]
    if np.min(np.abs(pos - np.round(pos))) > margin:
      rois.append(r)
  return np.stack(rois)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("method", ["gather", "dense"])
def test_roi_grad_matches_finite_differences(sampling_ratio, method):
  size, scale = (5, 4), 0.25
  rng = np.random.default_rng(11 + sampling_ratio)
  feat = rng.normal(size=(12, 14, 3))
  rois = _smooth_rois(rng, 6, 52.0, size, scale, sampling_ratio)
  cot = rng.normal(size=(6, *size, 3))
  with jax.enable_x64(True):
    f64, r64, c64 = (jnp.asarray(a, jnp.float64) for a in (feat, rois, cot))
    loss = lambda r: jnp.sum(ops.roi_align(
        f64, r, size, scale, sampling_ratio, method=method,
        roi_grad=True) * c64)
    grad = np.asarray(jax.grad(loss)(r64))
    eps = 1e-6
    fd = np.zeros_like(rois)
    for i in np.ndindex(*rois.shape):
      d = np.zeros_like(rois)
      d[i] = eps
      fd[i] = (float(loss(r64 + d)) - float(loss(r64 - d))) / (2 * eps)
  assert np.abs(fd).max() > 0.1
  np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


def test_roi_grad_default_off_and_forward_unchanged():
  rng = np.random.default_rng(12)
  feat = rng.normal(size=(16, 16, 4)).astype(np.float32)
  rois = _random_rois(rng, 20, 60.0)
  call = lambda r, g: ops.roi_align(feat, r, 7, 0.25, 0, roi_grad=g)
  np.testing.assert_allclose(np.asarray(call(rois, True)),
                             _torch_ref(feat, rois, 7, 0.25, 0, True),
                             atol=1e-4)
  off = jax.grad(lambda r: jnp.sum(call(r, False)))(rois)
  assert not np.any(np.asarray(off))


@pytest.mark.parametrize("roi_grad", [False, True])
@pytest.mark.parametrize("method", ["gather", "dense"])
def test_feature_grad_matches_torch_autograd(roi_grad, method):
  rng = np.random.default_rng(13)
  feat = rng.normal(size=(15, 17, 3)).astype(np.float32)
  rois = _random_rois(rng, 25, 70.0)
  cot = rng.normal(size=(25, 7, 6, 3)).astype(np.float32)
  grad = jax.grad(lambda f: jnp.sum(ops.roi_align(
      f, rois, (7, 6), 0.25, 0, method=method, roi_grad=roi_grad) * cot))(
          feat)
  tf = torch.tensor(feat).permute(2, 0, 1)[None].requires_grad_()
  out = torchvision.ops.roi_align(tf, [torch.tensor(rois)], (7, 6), 0.25, 0,
                                  True)
  (out * torch.tensor(cot).permute(0, 3, 1, 2)).sum().backward()
  ref = tf.grad[0].permute(1, 2, 0).numpy()
  np.testing.assert_allclose(np.asarray(grad), ref, atol=1e-4)


def test_multilevel_roi_grad_matches_finite_differences():
  rng = np.random.default_rng(14)
  strides = (4, 8)
  feats = [rng.normal(size=(64 // s, 64 // s, 2)) for s in strides]
  # Three boxes per level, each smooth at its own level's scale.
  picked = {0: [], 1: []}
  while min(len(v) for v in picked.values()) < 3:
    cand = _smooth_rois(rng, 1, 40.0, (7, 7), 0.25, 0)
    lvl = int(ops.map_roi_levels(jnp.asarray(cand), 2, 8)[0])
    pos = _sample_positions(cand, (7, 7), 1.0 / strides[lvl], 0)[0]
    if np.min(np.abs(pos - np.round(pos))) > 0.02 and len(picked[lvl]) < 3:
      picked[lvl].append(cand[0])
  rois = np.stack(picked[0] + picked[1])
  cot = rng.normal(size=(6, 7, 7, 2))
  with jax.enable_x64(True):
    fs = [jnp.asarray(f, jnp.float64) for f in feats]
    c64 = jnp.asarray(cot)
    loss = lambda r: jnp.sum(ops.multilevel_roi_align(
        fs, r, 7, strides, 0, finest_scale=8, method="gather",
        roi_grad=True) * c64)
    r64 = jnp.asarray(rois)
    grad = np.asarray(jax.grad(loss)(r64))
    eps = 1e-6
    fd = np.zeros_like(rois)
    for i in np.ndindex(*rois.shape):
      d = np.zeros_like(rois)
      d[i] = eps
      fd[i] = (float(loss(r64 + d)) - float(loss(r64 - d))) / (2 * eps)
  assert np.abs(fd).max() > 0.1
  np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)
