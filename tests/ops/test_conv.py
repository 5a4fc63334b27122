"""The CPU convolution with a tap-wise kernel gradient (and lax's for thin
inputs) against PyTorch's conv2d autograd (input and kernel gradients)
and flax's nn.Conv."""
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch

from scnet_jax.models.layers import Conv
from scnet_jax.ops.conv import THIN_INPUT, conv_general_dilated


@pytest.mark.parametrize("kernel,stride,groups,padding,cin", [
    (3, 1, 1, 1, 8), (3, 2, 1, 1, 8), (1, 2, 1, 0, 8), (7, 2, 1, 3, 8),
    (3, 2, 4, 1, 24), (1, 1, 1, "SAME", 8), (3, 2, 1, "SAME", 8),
    (7, 2, 1, 3, 3), (3, 1, 4, 1, 8)])
def test_gradients_match_torch(kernel, stride, groups, padding, cin):
  rng = np.random.default_rng(kernel * 10 + stride + groups)
  x = rng.normal(size=(2, 13, 18, cin)).astype(np.float32)
  w = rng.normal(size=(kernel, kernel, cin // groups, 12)).astype(np.float32)
  pads = padding if isinstance(padding, str) else [(padding, padding)] * 2
  conv = lambda x, w: conv_general_dilated(
      x, w, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)
  # The CPU's tap-wise path, but for thin inputs (an RGB stem: lax).
  assert ("custom_vjp_call" in str(jax.make_jaxpr(conv)(x, w))) == (
      cin // groups > THIN_INPUT)
  y, vjp = jax.vjp(conv, x, w)
  g = rng.normal(size=y.shape).astype(np.float32)
  dx, dw = vjp(g)

  tx = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()
  tw = torch.tensor(w).permute(3, 2, 0, 1).contiguous().requires_grad_()
  if isinstance(padding, str):  # SAME: XLA pads the extra pixel at the end
    total = [max((-(-n // stride) - 1) * stride + kernel - n, 0)
             for n in x.shape[1:3]]
    tpad = torch.nn.functional.pad(
        tx, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2,
             total[0] - total[0] // 2))
    ty = torch.nn.functional.conv2d(tpad, tw, stride=stride, groups=groups)
  else:
    ty = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding,
                                    groups=groups)
  np.testing.assert_allclose(np.asarray(y), ty.permute(0, 2, 3, 1)
                             .detach().numpy(), rtol=1e-4, atol=1e-4)
  ty.backward(torch.tensor(g).permute(0, 3, 1, 2))
  np.testing.assert_allclose(np.asarray(dx), tx.grad.permute(0, 2, 3, 1)
                             .numpy(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dw), tw.grad.permute(2, 3, 1, 0)
                             .numpy(), rtol=1e-4, atol=1e-4)


def test_layer_equals_flax_conv_values_and_gradients():
  x = np.random.default_rng(0).normal(size=(1, 9, 11, 4)).astype(np.float32)
  ours, ref = Conv(6, (3, 3), (2, 2)), nn.Conv(6, (3, 3), (2, 2))
  params = ref.init(jax.random.PRNGKey(0), x)
  loss = lambda m: lambda p: (m.apply(p, x) ** 2).sum()
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-5)
  got, want = jax.grad(loss(ours))(params), jax.grad(loss(ref))(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
