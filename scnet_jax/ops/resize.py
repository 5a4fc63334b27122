"""Bilinear resize with align_corners=True (PyTorch semantics).

`jax.image.resize` uses half-pixel centres; SCNet's semantic fusion and
feature relay use align_corners=True: src = dst * (in - 1) / (out - 1).
"""
import jax.numpy as jnp
import numpy as np


def _interp_matrix(n_in, n_out):
  """[n_out, n_in] float32 weights of 1-D align_corners=True interpolation."""
  m = np.zeros((n_out, n_in), np.float64)
  if n_out == 1 or n_in == 1:
    m[:, 0] = 1.0
    return m.astype(np.float32)
  src = np.arange(n_out) * (n_in - 1) / (n_out - 1)
  lo = np.clip(np.floor(src).astype(np.int64), 0, n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m[np.arange(n_out), lo] += 1.0 - frac
  m[np.arange(n_out), hi] += frac
  return m.astype(np.float32)


def resize_bilinear_align_corners(x, out_hw):
  """Resizes the two spatial axes of an NHWC array.

  Args:
    x: [..., H, W, C] float32 or bfloat16.
    out_hw: static (H_out, W_out).
  Returns:
    [..., H_out, W_out, C] in x's dtype.
  """
  h, w = x.shape[-3], x.shape[-2]
  oh, ow = out_hw
  if (h, w) == (oh, ow):
    return x
  my = jnp.asarray(_interp_matrix(h, oh), x.dtype)
  mx = jnp.asarray(_interp_matrix(w, ow), x.dtype)
  y = jnp.einsum("ph,...hwc->...pwc", my, x)
  return jnp.einsum("qw,...pwc->...pqc", mx, y)
