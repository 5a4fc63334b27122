"""2-D convolution whose kernel gradient is a sum of per-tap matmuls on CPU.

XLA's CPU backend lowers the kernel gradient of a convolution (a conv
contracting over batch and space) to a path 6-14x slower than the forward
conv (about 90x for grouped convs), and it dominates a CPU training step.
Written as one matmul per kernel tap, dW[i, j] = X[:, i::s, j::s, :]^T @ dY,
it costs 1.4-7x the forward conv (1x1 and grouped convs gain most). GPUs
and TPUs have fast native kernel gradients, so there the plain
`lax.conv_general_dilated` is used; so it is for convs of at most 4
input channels per group (an RGB stem), whose taps are matmuls too thin
to pay (lax's kernel gradient is about twice as fast there; docs/benchmarks.md).
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

# Input channels per group up to which lax's kernel gradient is used.
THIN_INPUT = 4


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (flax `nn.Conv`'s hook).

  The tap-wise kernel gradient applies on the CPU backend to NHWC/HWIO
  convolutions without dilation and with more than THIN_INPUT input
  channels per group; anything else is passed to lax unchanged.
  """
  plain = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides,
      padding=padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  dilated = any(d != 1 for d in (*(lhs_dilation or ()),
                                 *(rhs_dilation or ())))
  nhwc = lhs.ndim == 4 and lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")) == \
      lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if (jax.default_backend() != "cpu" or dilated or batch_group_count != 1
      or not nhwc or rhs.shape[2] <= THIN_INPUT):
    return plain(lhs, rhs)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2],
                                  window_strides, padding)
  return _conv_nhwc(lhs, rhs, tuple(window_strides),
                    tuple(tuple(p) for p in padding), feature_group_count,
                    precision, preferred_element_type)


def _conv_nhwc_plain(x, w, strides, padding, groups, precision, out_dtype):
  return lax.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, precision=precision,
      preferred_element_type=out_dtype)


_conv_nhwc = jax.custom_vjp(_conv_nhwc_plain, nondiff_argnums=(2, 3, 4, 5, 6))


def _conv_fwd(x, w, strides, padding, groups, precision, out_dtype):
  return _conv_nhwc(x, w, strides, padding, groups, precision,
                    out_dtype), (x, w)


def _conv_bwd(strides, padding, groups, precision, out_dtype, res, g):
  x, w = res
  # The conv is linear in x: transposing it gives dX without re-running the
  # forward pass that a vjp would trace.
  (dx,) = jax.linear_transpose(
      lambda x_: _conv_nhwc_plain(x_, w, strides, padding, groups,
                                  precision, out_dtype), x)(g)
  return dx, kernel_grad(x, g, w.shape, strides, padding, groups,
                         precision).astype(w.dtype)


_conv_nhwc.defvjp(_conv_fwd, _conv_bwd)


def kernel_grad(x, g, kernel_shape, strides, padding, groups=1,
                precision=None):
  """Gradient of an NHWC/HWIO convolution with respect to its kernel.

  Args:
    x: [N, H, W, Cin] the convolution's input.
    g: [N, Ho, Wo, Cout] the gradient of its output.
    kernel_shape: (kh, kw, Cin / groups, Cout).
    strides: (sh, sw); padding: ((top, bottom), (left, right)).
    groups: feature_group_count (ResNeXt).
  Returns:
    [kh, kw, Cin / groups, Cout] float32.
  """
  kh, kw, cin_g, cout = kernel_shape
  n, ho, wo, _ = g.shape
  (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  xs = xp.reshape(n, xp.shape[1], xp.shape[2], groups, cin_g)
  gs = g.reshape(n, ho, wo, groups, cout // groups)
  windows = [lax.slice(
      xs, (0, i, j, 0, 0),
      (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, groups, cin_g),
      (1, sh, sw, 1, 1)) for i in range(kh) for j in range(kw)]
  taps = [jnp.einsum("nhwgc,nhwgd->cgd", window, gs, precision=precision,
                     preferred_element_type=jnp.float32)
          for window in windows]
  return jnp.stack(taps).reshape(kh, kw, cin_g, cout)
