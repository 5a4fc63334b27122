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
                                          aligned))
  out = np.asarray(fn(feat, rois))
  ref = _torch_ref(feat, rois, size, 0.125, sampling_ratio, aligned)
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_empty_rois_and_bfloat16():
  feat = np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32)
  for sr in (0, 2):
    out = ops.roi_align(jnp.asarray(feat), jnp.zeros((0, 4)), 7, 1.0, sr,
                        method="gather")
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


def _check_against_central_differences(loss, rois, eps=1e-6):
  """jax.grad of loss (float64, jitted) at rois vs central differences."""
  r64 = jnp.asarray(rois, jnp.float64)
  grad = np.asarray(jax.grad(loss)(r64))
  fd = np.zeros_like(rois)
  for i in np.ndindex(*rois.shape):
    d = np.zeros_like(rois)
    d[i] = eps
    fd[i] = (float(loss(r64 + d)) - float(loss(r64 - d))) / (2 * eps)
  assert np.abs(fd).max() > 0.1
  np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sampling_ratio,scale", [(0, 0.25), (0, 1.0),
                                                  (2, 0.25)])
@pytest.mark.parametrize("method", ["gather", "dense"])
def test_roi_grad_matches_finite_differences(sampling_ratio, scale, method):
  # scale 1: RoIs needing up to 8 samples per bin, several window tiles.
  size = (5, 4)
  rng = np.random.default_rng(11 + sampling_ratio)
  feat = rng.normal(size=(12, 14, 3))
  rois = _smooth_rois(rng, 6, 52.0 * 0.25 / scale, size, scale,
                      sampling_ratio, margin=0.005)
  cot = rng.normal(size=(6, *size, 3))
  with jax.enable_x64(True):
    f64, c64 = (jnp.asarray(a, jnp.float64) for a in (feat, cot))
    loss = jax.jit(lambda r: jnp.sum(ops.roi_align(
        f64, r, size, scale, sampling_ratio, method=method,
        roi_grad=True) * c64))
    _check_against_central_differences(loss, rois)


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
@pytest.mark.parametrize("scale", [0.25, 1.0])
def test_feature_grad_matches_torch_autograd(roi_grad, method, scale):
  # scale 1: up to 9 samples per bin (several window tiles per bin).
  rng = np.random.default_rng(13)
  feat = rng.normal(size=(15, 17, 3)).astype(np.float32)
  rois = _random_rois(rng, 25, 70.0)
  cot = rng.normal(size=(25, 7, 6, 3)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda f: jnp.sum(ops.roi_align(
      f, rois, (7, 6), scale, 0, method=method, roi_grad=roi_grad) * cot)))(
          feat)
  tf = torch.tensor(feat).permute(2, 0, 1)[None].requires_grad_()
  out = torchvision.ops.roi_align(tf, [torch.tensor(rois)], (7, 6), scale, 0,
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
    loss = jax.jit(lambda r: jnp.sum(ops.multilevel_roi_align(
        fs, r, 7, strides, 0, finest_scale=8, method="gather",
        roi_grad=True) * c64))
    _check_against_central_differences(loss, rois)


@pytest.mark.parametrize("method", ["gather", "dense"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_canvas_hw_matches_the_image_alone(method, sampling_ratio):
  # Each image's features sit at the top-left of a larger zero-padded map;
  # with canvas_hw the result equals torchvision on the image's own map.
  rng = np.random.default_rng(15)
  strides = (4, 8)
  canvases = [(40, 48), (24, 64)]
  bucket = (64, 80)
  small, padded = [], [np.zeros((2, bucket[0] // s, bucket[1] // s, 3),
                                np.float32) for s in strides]
  for b, (ch, cw) in enumerate(canvases):
    lv = [rng.normal(size=(ch // s, cw // s, 3)).astype(np.float32)
          for s in strides]
    small.append(lv)
    for l, f in enumerate(lv):
      padded[l][b, :f.shape[0], :f.shape[1]] = f + 1.0
      small[b][l] = f + 1.0
  rois = []
  for ch, cw in canvases:
    # Boxes over the bottom/right canvas border, as proposals clipped to
    # the image still reach it (aligned samples up to the last pixel).
    x1 = rng.uniform(0, cw - 8, 12)
    y1 = rng.uniform(0, ch - 8, 12)
    rois.append(np.stack([x1, y1, np.full(12, cw + 0.0),
                          rng.uniform(y1 + 4, ch + 3)], 1))
  rois = np.stack(rois).astype(np.float32)
  canvas_hw = np.array(canvases, np.int32)
  call = lambda c: jax.jit(lambda fs, r: ops.multilevel_roi_align(
      fs, r, 7, strides, sampling_ratio, finest_scale=12, method=method,
      canvas_hw=c))(padded, rois)
  out, plain = np.asarray(call(canvas_hw)), np.asarray(call(None))
  lvl = np.asarray(ops.map_roi_levels(jnp.asarray(rois), 2, 12))
  assert set(lvl.ravel()) == {0, 1}
  for b in range(2):
    for l, s in enumerate(strides):
      ref = _torch_ref(small[b][l], rois[b], 7, 1.0 / s, sampling_ratio,
                       True)
      np.testing.assert_allclose(out[b][lvl[b] == l], ref[lvl[b] == l],
                                 atol=1e-4)
  assert np.abs(out - plain).max() > 0.1  # the bucket's border differs
  # Unbatched roi_align, image 1 on the stride-8 level.
  single = ops.roi_align(padded[1][1], rois[1], 7, 0.125, sampling_ratio,
                         method=method, canvas_hw=canvas_hw[1])
  np.testing.assert_allclose(
      np.asarray(single), _torch_ref(small[1][1], rois[1], 7, 0.125,
                                     sampling_ratio, True), atol=1e-4)


def test_canvas_hw_bad_shape():
  with pytest.raises(ValueError, match="canvas_hw"):
    ops.roi_align(np.zeros((2, 8, 8, 1), np.float32), np.zeros((2, 3, 4)),
                  7, 1.0, 2, canvas_hw=np.zeros((3, 2), np.int32))


def _rois_needing(rng, counts, size, scale, extent):
  """One box per (gy, gx) in counts needing exactly that many samples per
  bin axis under the adaptive rule, at random places (some overhanging)."""
  oh, ow = size
  rois = []
  for gy, gx in counts:
    hh = (gy - rng.uniform(0.05, 0.95)) * oh / scale
    ww = (gx - rng.uniform(0.05, 0.95)) * ow / scale
    x1, y1 = rng.uniform(-0.2 * extent, 0.9 * extent, 2)
    rois.append([x1, y1, x1 + ww, y1 + hh])
  return np.asarray(rois, np.float32)


@pytest.mark.parametrize("method", ["gather", "dense"])
def test_adaptive_exact_for_1_to_16_samples(method):
  rng = np.random.default_rng(21)
  counts = [(g, 17 - g) for g in range(1, 17)] + [(g, g) for g in range(1, 17)]
  size, scale = (7, 5), 0.5
  feats = rng.normal(size=(2, 40, 44, 4)).astype(np.float32)
  rois = np.stack([_rois_needing(rng, counts, size, scale, 80.0)
                   for _ in range(2)])
  out = np.asarray(jax.jit(lambda f, r: ops.roi_align(
      f, r, size, scale, 0, method=method))(feats, rois))
  for b in range(2):
    ref = _torch_ref(feats[b], rois[b], size, scale, 0, True)
    np.testing.assert_allclose(out[b], ref, atol=2e-5, rtol=1e-5)
  bf = np.asarray(ops.roi_align(jnp.asarray(feats[0], jnp.bfloat16),
                                rois[0], size, scale, 0, method=method),
                  np.float32)
  ref = _torch_ref(feats[0], rois[0], size, scale, 0, True)
  np.testing.assert_allclose(bf, ref, atol=5e-2)


def test_adaptive_multilevel_exact():
  # Per-level references: torchvision roi_align on each RoI's own level.
  rng = np.random.default_rng(22)
  strides = (4, 8, 16, 32)
  feats = [rng.normal(size=(2, 256 // s, 320 // s, 3)).astype(np.float32)
           for s in strides]
  xy = rng.uniform(-20, 300, size=(2, 120, 2))
  wh = np.exp(rng.uniform(np.log(2), np.log(400), size=(2, 120, 2)))
  rois = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  rois[:, :3] = [[0, 0, 500, 480], [-30, 10, 600, 300], [10, 10, 330, 700]]
  out = np.asarray(jax.jit(lambda fs, r: ops.multilevel_roi_align(
      fs, r, 7, strides, 0, method="gather"))(feats, rois))
  lvl = np.asarray(ops.map_roi_levels(jnp.asarray(rois), 4))
  wh = rois[..., 2:] - rois[..., :2]
  need = np.ceil(wh * np.take(1.0 / np.asarray(strides), lvl)[..., None] / 7)
  assert need.max() > 8 and set(lvl.ravel()) == {0, 1, 2, 3}
  for b in range(2):
    for l, s in enumerate(strides):
      sel = lvl[b] == l
      ref = _torch_ref(feats[l][b], rois[b][sel], 7, 1.0 / s, 0, True)
      np.testing.assert_allclose(out[b][sel], ref, atol=2e-5, rtol=1e-5)


def test_adaptive_chunked_loop_and_vmap(monkeypatch):
  # Tiny chunks: many loop steps, items of one RoI split across steps;
  # forward and backward equal the one-step result, and vmap agrees.
  import sys
  mod = sys.modules["scnet_jax.ops.roi_align"]
  rng = np.random.default_rng(23)
  feats = rng.normal(size=(2, 30, 34, 4)).astype(np.float32)
  rois = np.stack([_rois_needing(rng, [(g, g) for g in range(1, 13)],
                                 (7, 7), 0.5, 60.0) for _ in range(2)])
  cot = rng.normal(size=(2, 12, 7, 7, 4)).astype(np.float32)
  def run(f, r):
    return ops.roi_align(f, r, 7, 0.5, 0, method="gather")
  loss = lambda f, r: jnp.sum(run(f, r) * cot)
  whole = jax.jit(run)(feats, rois), jax.jit(jax.grad(loss))(feats, rois)
  monkeypatch.setattr(mod, "MAX_GATHER_ELEMENTS", 7 * 7 * 16 * 4 * 3)
  small = jax.jit(run)(feats, rois), jax.jit(jax.grad(loss))(feats, rois)
  mapped = jax.vmap(run)(feats, rois)
  for a, b in zip(whole, small):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  np.testing.assert_allclose(np.asarray(mapped), np.asarray(whole[0]),
                             atol=1e-5)
  ref = _torch_ref(feats[1], rois[1], 7, 0.5, 0, True)
  np.testing.assert_allclose(np.asarray(small[0][1]), ref, atol=2e-5)
