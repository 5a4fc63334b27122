"""AggMask's per-cell generated CNN (ops/aggregate.py) against PyTorch's
grouped convolution, as the authors run it (every cell's weights one
group of F.conv2d), and its neighbour tables on hand-made cases."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from scnet_jax.ops.aggregate import (aggregate, identity_weights,
                                     layer_shapes, neighbour_cells,
                                     num_generated)


def _torch_grouped_autograd(x, weights, shapes):
  """x [N, h, w, C], weights [N, P] tensors -> [N, h, w]: the cells as
  groups of one convolution per layer, weights viewed as
  [N * C_out, C_in, k, k] (the authors' F.conv2d(..., groups=N))."""
  n, h, w, _ = x.shape
  y = x.permute(0, 3, 1, 2).reshape(1, -1, h, w)
  start = 0
  for i, (cout, cin, k, _) in enumerate(shapes):
    size = cout * cin * k * k
    kernel = weights[:, start:start + size].reshape(n * cout, cin, k, k)
    bias = weights[:, start + size:start + size + cout].reshape(-1)
    start += size + cout
    y = F.conv2d(y, kernel, bias, padding=k // 2, groups=n)
    if i < len(shapes) - 1:
      y = F.relu(y)
  return y.reshape(n, h, w)


def _cell_major(x):
  """[B, K, h, w, C] -> aggregate's [B, K, C, h, w]."""
  return jnp.moveaxis(jnp.asarray(x), -1, 2)


def _torch_grouped(x, weights, shapes):
  """_torch_grouped_autograd on NumPy arrays."""
  return _torch_grouped_autograd(torch.from_numpy(x),
                                 torch.from_numpy(weights), shapes).numpy()


def test_layout_and_count_are_the_authors():
  shapes = layer_shapes(5 + 16, 4, 3)
  assert shapes == [(4, 21, 3, 3), (4, 4, 3, 3), (1, 4, 3, 3)]
  # 756 + 4, 144 + 4, 36 + 1: the 945 values of a K = 5 cell.
  assert num_generated(shapes) == 945
  assert num_generated(layer_shapes(4 + 16, 4, 3)) == 909
  assert layer_shapes(21, 4, 1) == [(1, 21, 3, 3)]


def test_equals_torch_grouped_conv():
  """Cells of 2 images, their own channels alone or followed by channels
  shared by an image's cells (the context), against one grouped conv of
  every cell's full input."""
  rng = np.random.default_rng(0)
  for layers, own, shared in ((3, 5, 16), (2, 4, 16), (1, 6, 0), (3, 21, 0)):
    shapes = layer_shapes(own + shared, 4, layers)
    x = rng.normal(0, 1, (2, 7, 12, 10, own)).astype(np.float32)
    ctx = rng.normal(0, 1, (2, 12, 10, shared)).astype(np.float32)
    weights = rng.uniform(-0.5, 0.5, (2, 7, num_generated(shapes))).astype(
        np.float32)
    got = aggregate(_cell_major(x), weights, shapes,
                    shared=ctx if shared else None)
    full = np.concatenate([x, np.broadcast_to(ctx[:, None],
                                              (2, 7, 12, 10, shared))], -1)
    want = _torch_grouped(full.reshape(14, 12, 10, -1),
                          weights.reshape(14, -1), shapes)
    np.testing.assert_allclose(np.asarray(got).reshape(14, 12, 10), want,
                               rtol=1e-4, atol=1e-5)


def test_gradients_equal_torch_grouped_conv():
  """The hand-written backward (cell_correlate's VJP) against autograd
  through the authors' grouped convolution: gradients w.r.t. the cells'
  inputs, the shared context and the generated weights, for the 3x3
  kernel and a 5x5 one (the flip and the tap order show there)."""
  rng = np.random.default_rng(3)
  for kernel in (3, 5):
    shapes = layer_shapes(5 + 3, 4, 3, kernel)
    x = rng.normal(0, 1, (2, 3, 9, 7, 5)).astype(np.float32)
    ctx = rng.normal(0, 1, (2, 9, 7, 3)).astype(np.float32)
    weights = rng.uniform(-0.5, 0.5, (2, 3, num_generated(shapes))).astype(
        np.float32)
    probe = rng.normal(0, 1, (2, 3, 9, 7)).astype(np.float32)

    def loss(x, ctx, weights):
      return jnp.sum(aggregate(_cell_major(x), weights, shapes, shared=ctx)
                     * probe)
    got = jax.grad(loss, argnums=(0, 1, 2))(x, ctx, weights)

    tx, tc, tw = (torch.from_numpy(a).requires_grad_()
                  for a in (x, ctx, weights))
    full = torch.cat([tx, tc[:, None].expand(2, 3, 9, 7, 3)], -1)
    y = _torch_grouped_autograd(full.reshape(6, 9, 7, 8), tw.reshape(6, -1),
                                shapes)
    (y * torch.from_numpy(probe.reshape(6, 9, 7))).sum().backward()
    for g, t in zip(got, (tx, tc, tw)):
      np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=1e-4,
                                 atol=1e-4)


def test_inside_is_an_image_of_that_size():
  """An image whose map is its first 8 x 6 cells equals the convolution
  of that 8 x 6 map alone (zero padding at its border)."""
  rng = np.random.default_rng(1)
  shapes = layer_shapes(21, 4, 3)
  x = rng.normal(0, 1, (1, 3, 12, 10, 5)).astype(np.float32)
  ctx = rng.normal(0, 1, (1, 12, 10, 16)).astype(np.float32)
  weights = rng.uniform(-0.5, 0.5, (1, 3, 945)).astype(np.float32)
  inside = np.zeros((1, 12, 10, 1), bool)
  inside[:, :8, :6] = True
  got = np.asarray(aggregate(_cell_major(x), weights, shapes, inside,
                             ctx))[0]
  full = np.concatenate([x[0], np.broadcast_to(ctx, (3, 12, 10, 16))], -1)
  want = _torch_grouped(np.ascontiguousarray(full[:, :8, :6]), weights[0],
                        shapes)
  np.testing.assert_allclose(got[:, :8, :6], want, rtol=1e-4, atol=1e-5)
  assert not got[:, 8:].any() and not got[:, :, 6:].any()


def test_identity_filter_passes_the_centre_mask():
  rng = np.random.default_rng(2)
  x = rng.normal(0, 3, (2, 4, 9, 11, 5)).astype(np.float32)
  ctx = rng.normal(0, 3, (2, 9, 11, 16)).astype(np.float32)
  shapes = layer_shapes(21, 4, 3)
  w = identity_weights(shapes, np.eye(5)[2])
  got = aggregate(_cell_major(x), np.broadcast_to(w, (2, 4, len(w))), shapes,
                  shared=ctx)
  np.testing.assert_allclose(np.asarray(got), x[..., 2], atol=1e-5)
  # Two layers, and a mean of 4 neighbours (mask interpolation).
  shapes = layer_shapes(4 + 16, 4, 2)
  w = identity_weights(shapes, np.full(4, 0.25))
  got = aggregate(_cell_major(x[..., :4]),
                  np.broadcast_to(w, (2, 4, len(w))), shapes, shared=ctx)
  np.testing.assert_allclose(np.asarray(got), x[..., :4].mean(-1),
                             atol=1e-5)


def test_neighbour_tables():
  cross = neighbour_cells(4, 4)
  assert cross.shape == (16, 5)
  # Cell (0, 0): above and left clamp to itself; right (0, 1); below (1, 0).
  assert cross[0].tolist() == [0, 0, 0, 1, 4]
  # Cell (2, 1) = 9: (1, 1), (2, 0), (2, 1), (2, 2), (3, 1).
  assert cross[9].tolist() == [5, 8, 9, 10, 13]
  assert (cross[:, 2] == np.arange(16)).all()
  interp = neighbour_cells(5, 3)
  assert interp.shape == (25, 4)
  # Category cell (1, 1) sits at (0.5, 0.5) of the 3 x 3 mask grid:
  # (floor y, ceil x), (ceil, ceil), (ceil y, floor x), (floor, floor).
  assert interp[6].tolist() == [1, 4, 3, 0]
  # Cell (2, 4) sits exactly on mask cell (1, 2).
  assert interp[14].tolist() == [5, 5, 5, 5]
