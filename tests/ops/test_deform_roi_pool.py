"""Deformable RoI pooling (ops/deform_roi_pool.py): zero offsets equal
torchvision's roi_align (aligned=True); a constant offset of a whole bin
grid equals roi_align of the moved box; the gradient in the offsets
matches central finite differences (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from scnet_jax.ops.deform_roi_pool import deform_roi_pool


def _data(seed=0, b=2, k=5, h=13, w=17, c=3):
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(b, h, w, c)).astype(np.float32)
  xy = rng.uniform(-4, 50, (b, k, 2))
  wh = rng.uniform(2, 40, (b, k, 2))
  rois = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  return feats, rois


def _torch_roi_align(feats, rois, size, scale, ratio):
  b, k = rois.shape[:2]
  idx = np.repeat(np.arange(b), k)[:, None].astype(np.float32)
  boxes = np.concatenate([idx, rois.reshape(-1, 4)], 1)
  out = torchvision.ops.roi_align(
      torch.from_numpy(feats).permute(0, 3, 1, 2), torch.from_numpy(boxes),
      size, spatial_scale=scale, sampling_ratio=ratio, aligned=True)
  return out.permute(0, 2, 3, 1).numpy().reshape(b, k, size, size, -1)


@pytest.mark.parametrize("ratio", [1, 2, 0])
def test_zero_offsets_equal_torchvision_roi_align(ratio):
  feats, rois = _data()
  ours = deform_roi_pool(feats, rois, None, 7, 0.25, ratio)
  ref = _torch_roi_align(feats, rois, 7, 0.25, ratio)
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-5)
  zeros = jnp.zeros((*rois.shape[:2], 7, 7, 2))
  np.testing.assert_allclose(
      np.asarray(deform_roi_pool(feats, rois, zeros, 7, 0.25, ratio)), ref,
      atol=1e-5)


def test_uniform_offset_equals_roi_align_of_the_moved_box():
  feats, rois = _data(1)
  dx, dy, gamma = 0.3, -0.2, 0.1
  offsets = np.broadcast_to(np.array([dx, dy], np.float32),
                            (*rois.shape[:2], 7, 7, 2))
  w = rois[..., 2] - rois[..., 0]
  h = rois[..., 3] - rois[..., 1]
  moved = rois + np.stack([gamma * dx * w, gamma * dy * h] * 2, -1)
  ours = deform_roi_pool(feats, rois, offsets, 7, 0.25, 2, gamma=gamma)
  np.testing.assert_allclose(np.asarray(ours),
                             _torch_roi_align(feats, moved, 7, 0.25, 2),
                             atol=1e-5)


def test_offset_gradient_matches_finite_differences():
  jax.config.update("jax_enable_x64", True)
  try:
    feats, rois = _data(2, b=1, k=3, c=2)
    feats = feats.astype(np.float64)
    rng = np.random.default_rng(3)
    offsets = rng.uniform(-0.4, 0.4, (1, 3, 3, 3, 2))
    cot = rng.normal(size=(1, 3, 3, 3, 2))
    f = lambda o: jnp.sum(deform_roi_pool(jnp.asarray(feats), rois, o, 3,
                                          0.25, 2, gamma=0.5) * cot)
    grad = np.asarray(jax.grad(f)(jnp.asarray(offsets)))
    assert np.abs(grad).max() > 0
    eps = 1e-6
    fd = np.zeros_like(offsets)
    for i in np.ndindex(offsets.shape):
      d = np.zeros_like(offsets)
      d[i] = eps
      fd[i] = (float(f(offsets + d)) - float(f(offsets - d))) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)
  finally:
    jax.config.update("jax_enable_x64", False)
