"""Bilinear resizes with PyTorch's semantics.

`jax.image.resize` uses half-pixel centres; SCNet's semantic fusion and
feature relay use align_corners=True: src = dst * (in - 1) / (out - 1).
SOLO resizes with F.interpolate's default, align_corners=False:
src = max((dst + 0.5) * in / out - 0.5, 0) (`resize_bilinear_half_pixel`).
"""
import jax
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


def _interp_matrices(n_in, n_out, size_in, size_out):
  """[B, n_out, n_in] float32 align_corners=True weights per image, for a
  map whose first size_in [B] cells are resized to its first size_out [B]
  cells (rows past size_out are zero)."""
  i = jnp.arange(n_out, dtype=jnp.float32)[None, :]
  si = size_in.astype(jnp.float32)[:, None]
  so = size_out.astype(jnp.float32)[:, None]
  src = i * (si - 1.0) / jnp.maximum(so - 1.0, 1.0)
  lo = jnp.clip(jnp.floor(src), 0.0, si - 1.0)
  hi = jnp.minimum(lo + 1.0, si - 1.0)
  frac = (src - lo) * (i < so)
  m = (jax.nn.one_hot(lo.astype(jnp.int32), n_in) * (1.0 - frac)[..., None]
       + jax.nn.one_hot(hi.astype(jnp.int32), n_in) * frac[..., None])
  return m * (i < so)[..., None]


def resize_bilinear_align_corners(x, out_hw, in_extent=None,
                                  out_extent=None):
  """Resizes the two spatial axes of an NHWC array.

  Args:
    x: [..., H, W, C] float32 or bfloat16.
    out_hw: static (H_out, W_out).
    in_extent, out_extent: optional [B, 2] int32 (x then [B, H, W, C]):
      per image, only the first in_extent rows and columns of x are its
      map, resized onto the first out_extent of the output (zero past
      it), as PyTorch resizes each image of its own size (structures.
      Canvas.extent gives both).
  Returns:
    [..., H_out, W_out, C] in x's dtype.
  """
  h, w = x.shape[-3], x.shape[-2]
  oh, ow = out_hw
  if in_extent is not None:
    my = _interp_matrices(h, oh, in_extent[:, 0], out_extent[:, 0])
    mx = _interp_matrices(w, ow, in_extent[:, 1], out_extent[:, 1])
    y = jnp.einsum("bph,bhwc->bpwc", my.astype(x.dtype), x)
    return jnp.einsum("bqw,bpwc->bpqc", mx.astype(x.dtype), y)
  if (h, w) == (oh, ow):
    return x
  my = jnp.asarray(_interp_matrix(h, oh), x.dtype)
  mx = jnp.asarray(_interp_matrix(w, ow), x.dtype)
  y = jnp.einsum("ph,...hwc->...pwc", my, x)
  return jnp.einsum("qw,...pwc->...pqc", mx, y)


def _half_pixel_matrices(n_in, n_out, size_in, size_out):
  """[B, n_out, n_in] float32 align_corners=False weights per image: the
  first size_in [B] cells resized onto the first size_out [B] (rows past
  size_out zero)."""
  i = jnp.arange(n_out, dtype=jnp.float32)[None, :]
  si = size_in.astype(jnp.float32)[:, None]
  so = jnp.maximum(size_out.astype(jnp.float32)[:, None], 1.0)
  src = jnp.maximum((i + 0.5) * (si / so) - 0.5, 0.0)
  lo = jnp.minimum(jnp.floor(src), si - 1.0)
  hi = jnp.minimum(lo + 1.0, si - 1.0)
  frac = src - lo
  m = (jax.nn.one_hot(lo.astype(jnp.int32), n_in) * (1.0 - frac)[..., None]
       + jax.nn.one_hot(hi.astype(jnp.int32), n_in) * frac[..., None])
  return m * (i < size_out[:, None])[..., None]


def resize_bilinear_half_pixel(x, out_hw, in_extent, out_extent):
  """F.interpolate(mode='bilinear', align_corners=False) of each image's
  map, as PyTorch resizes an image of its own size.

  Args:
    x: [B, H, W, C] float32 or bfloat16.
    out_hw: static (H_out, W_out).
    in_extent, out_extent: [B, 2] int32: per image, the first in_extent
      rows and columns of x are its map, resized onto the first out_extent
      of the output (zero past it). The scale is in / out, which is
      PyTorch's for a given `size` and for a `scale_factor` that divides
      the sizes exactly.
  Returns:
    [B, H_out, W_out, C] in x's dtype.
  """
  my = _half_pixel_matrices(x.shape[1], out_hw[0], in_extent[:, 0],
                            out_extent[:, 0])
  mx = _half_pixel_matrices(x.shape[2], out_hw[1], in_extent[:, 1],
                            out_extent[:, 1])
  y = jnp.einsum("bph,bhwc->bpwc", my.astype(x.dtype), x)
  return jnp.einsum("bqw,bpwc->bpqc", mx.astype(x.dtype), y)
