"""AggMask's aggregation (Wang et al. 2021): a small CNN whose weights are
generated per grid cell, run on the mask logits of the cell's neighbours
and on context channels, giving one aggregated mask per cell.

The generated vector of a cell holds, layer after layer, the kernel
[C_out, C_in, k, k] in row-major order and then the bias [C_out] (the
authors' `learned_weight_kernel_shape` layout, so their F.conv2d with
groups = cells computes the same). Layers: C_in -> hidden (ReLU) ->
hidden (ReLU) ... -> 1; 'same' zero padding.
"""
import jax
import jax.numpy as jnp
import numpy as np


def layer_shapes(in_channels, hidden, num_layers, kernel=3):
  """[(C_out, C_in, k, k)] of the generated layers (one layer: straight to
  one channel)."""
  if num_layers < 1:
    raise ValueError(f"num_layers must be >= 1, got {num_layers}")
  chans = [in_channels] + [hidden] * (num_layers - 1) + [1]
  return [(o, i, kernel, kernel) for i, o in zip(chans[:-1], chans[1:])]


def num_generated(shapes):
  """Length of a cell's generated vector: every kernel and bias."""
  return int(sum(np.prod(s) + s[0] for s in shapes))


def identity_weights(shapes, mix):
  """[num_generated(shapes)] weights (the layout above) under which the
  CNN outputs sum_k mix[k] x_k of its own input channels: the first layer
  splits the mix into +y and -y, the middle ones keep both, the last
  takes relu(y) - relu(-y) = y; biases zero. Needs two hidden channels
  unless there is one layer.

  mix: [K] float weights of the first K input channels (e.g. one-hot on
  the centre cell: its own mask).
  """
  mix = np.asarray(mix, np.float32)
  if len(shapes) > 1 and shapes[0][0] < 2:
    raise ValueError("an identity through ReLU layers needs 2 hidden "
                     "channels")
  parts = []
  for i, (cout, cin, k, _) in enumerate(shapes):
    w = np.zeros((cout, cin, k, k), np.float32)
    c = k // 2
    if len(shapes) == 1:
      w[0, :len(mix), c, c] = mix
    elif i == 0:
      w[0, :len(mix), c, c], w[1, :len(mix), c, c] = mix, -mix
    elif i < len(shapes) - 1:
      w[0, 0, c, c], w[1, 1, c, c] = 1.0, 1.0
    else:
      w[0, 0, c, c], w[0, 1, c, c] = 1.0, -1.0
    parts += [w.reshape(-1), np.zeros(cout, np.float32)]
  return np.concatenate(parts)


def _shifted(x, k):
  """The k*k 'same'-padded shifts of x [..., h, w] (zero padding), tap
  (dy, dx) row-major."""
  h, w = x.shape[-2:]
  p = k // 2
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])
  return [padded[..., dy:dy + h, dx:dx + w] for dy in range(k)
          for dx in range(k)]


def _columns(x, k):
  """x [N, C, h, w] -> [N, C * k * k, h * w]: its 'same'-padded shifts,
  channel-major then tap (the layout's order of a kernel's C_in, k, k)."""
  n, c, h, w = x.shape
  return jnp.stack(_shifted(x, k), 2).reshape(n, c * k * k, h * w)


def _correlate(x, kernel):
  """x [N, C, h, w], kernel [N, O, C, k, k] -> [N, O, h, w]: each map
  correlated ('same', zero padding) with its own kernel, written as the
  sum of its O * C * k * k scaled shifts. XLA fuses that into one pass
  over x; as batched matrix products of 4-5 channels (one per tap) the
  same sum ran 10x slower on a CPU."""
  _, o, c, k, _ = kernel.shape
  taps = _shifted(x, k)
  outs = []
  for j in range(o):
    y = 0.0
    for i in range(c):
      for t, xs in enumerate(taps):
        y = y + xs[:, i] * kernel[:, j, i, t // k, t % k, None, None]
    outs.append(y)
  return jnp.stack(outs, 1)


@jax.custom_vjp
def cell_correlate(x, kernel):
  """_correlate with a hand-written gradient: the input's is the same
  correlation with the kernel flipped and transposed, the kernel's one
  batched matrix product of the k*k shifts with the output gradient.
  Autodiff of the sum gives O * C * k * k separate reductions instead,
  which run as fast but compile 2.5x slower (AggMask's train step
  aggregates at 5 levels)."""
  return _correlate(x, kernel)


def _cell_correlate_fwd(x, kernel):
  return _correlate(x, kernel), (x, kernel)


def _cell_correlate_bwd(res, dy):
  x, kernel = res
  n, o, _, k, _ = kernel.shape
  dx = _correlate(dy, jnp.flip(jnp.swapaxes(kernel, 1, 2), (3, 4)))
  dk = jnp.einsum("nqp,nop->nqo", _columns(x, k), dy.reshape(n, o, -1))
  return dx, jnp.moveaxis(dk, 2, 1).reshape(kernel.shape)


cell_correlate.defvjp(_cell_correlate_fwd, _cell_correlate_bwd)


def aggregate(x, weights, shapes, inside=None, shared=None):
  """Runs each cell's generated CNN on its input.

  Args:
    x: [B, K, C_x, h, w] float32: per image, its K cells' own input
      channels (their neighbours' mask logits), each a map.
    weights: [B, K, num_generated(shapes)] float32 generated weights.
    shapes: layer_shapes(C_x + C_s, ...) (static).
    inside: optional [B, h, w, 1] bool: each image's map (its canvas
      region); every layer's input is zeroed outside it, as the
      convolution of an image of that size pads with zeros.
    shared: optional [B, h, w, C_s] channels every cell of an image reads
      after its own (the context): their first-layer product is one
      matrix product per image, not one per cell.
  Returns:
    [B, K, h, w] float32 aggregated mask logits (zero outside `inside`).
  """
  b, n, cx, h, w = x.shape
  x = x.reshape(b * n, cx, h, w)
  keep = None
  if inside is not None:
    keep = jnp.repeat(inside[..., 0], n, axis=0)[:, None]   # [B*K,1,h,w]
    x = jnp.where(keep, x, 0.0)
    if shared is not None:
      shared = jnp.where(inside, shared, 0.0)
  start = 0
  for i, (cout, cin, k, _) in enumerate(shapes):
    size = cout * cin * k * k
    kernel = weights[..., start:start + size].reshape(b * n, cout, cin, k, k)
    bias = weights[..., start + size:start + size + cout]
    start += size + cout
    y = cell_correlate(x, kernel[:, :, :x.shape[1]])
    y = y + bias.reshape(b * n, cout, 1, 1)
    if i == 0 and shared is not None:
      cols = _columns(jnp.moveaxis(shared, -1, 1), k)
      ks = kernel[:, :, cx:].reshape(b, n * cout, -1)
      y = y + jnp.einsum("bqp,bmq->bmp", cols, ks).reshape(b * n, cout, h, w)
    x = jnp.maximum(y, 0.0) if i < len(shapes) - 1 else y
    if keep is not None:
      x = jnp.where(keep, x, 0.0)
  return x.reshape(b, n, h, w)


def neighbour_cells(cls_grid, mask_grid):
  """[S_c^2, K] int32 mask-grid cells (i * S_m + j) whose masks a category
  cell aggregates (the authors' spatial index).

  Equal grids: K = 5, the cell and its 4-neighbours in the order above,
  left, itself, right, below (clamped at the border; the cell itself is
  column 2). A coarser mask grid (mask interpolation): K = 4, the mask
  cells around the category cell's position (i, j) * (S_m - 1) /
  (S_c - 1): (floor y, ceil x), (ceil y, ceil x), (ceil y, floor x),
  (floor y, floor x).
  """
  s, m = cls_grid, mask_grid
  ij = np.stack(np.meshgrid(np.arange(s), np.arange(s), indexing="ij"),
                -1).reshape(-1, 2).astype(np.float32)
  if m == s:
    offsets = np.array([[-1, 0], [0, -1], [0, 0], [0, 1], [1, 0]])
    cells = np.clip(ij[:, None, :] + offsets[None], 0, m - 1)
  elif m < s:
    loc = ij * np.float32((m - 1) / (s - 1))
    lo, hi = np.floor(loc), np.ceil(loc)
    cells = np.stack([np.stack([lo[:, 0], hi[:, 1]], -1), hi,
                      np.stack([hi[:, 0], lo[:, 1]], -1), lo], 1)
  else:
    raise ValueError(f"mask grid {m} is finer than the category grid {s}")
  cells = cells.astype(np.int32)
  return cells[..., 0] * m + cells[..., 1]
