"""Exact greedy non-maximum suppression with static shapes.

Boxes are sorted by score and processed in tiles of `tile_size`. A tile is
first suppressed by the boxes already kept in earlier tiles (tile-by-tile
IoU blocks), then resolved internally by iterating `keep_i = alive_i and no kept j < i overlaps i` to its fixed point,
which is exactly the greedy result (entry t is final after t iterations;
in practice a handful suffice). Memory is O(tile_size^2), work O(N^2 / 2)
IoU evaluations at worst, and the loop over tiles stops once `max_output`
boxes are kept.
"""
import jax
import jax.numpy as jnp

from scnet_jax.ops._checks import check_rank, check_same_length
from scnet_jax.ops.boxes import _pairwise_iou


def _check_nms_args(boxes, scores, max_output):
  check_rank("nms boxes", boxes, 2, 4)
  check_rank("nms scores", scores, 1)
  check_same_length("nms boxes", boxes, "nms scores", scores)
  if int(max_output) < 1:
    raise ValueError(f"nms max_output must be >= 1, got {max_output}")


def nms(boxes, scores, iou_threshold, max_output, valid=None, tile_size=256):
  """Greedy NMS: a box is dropped when IoU > iou_threshold with a kept box.

  Args:
    boxes: [N, 4] (x1, y1, x2, y2), float32 or bfloat16.
    scores: [N] scores; ties are broken by lower index first.
    iou_threshold: Python float or scalar array.
    max_output: static int, length of the result.
    valid: optional [N] bool; False entries are never kept (padding).
    tile_size: static tile length.
  Returns:
    keep: [max_output] int32 indices into boxes, by decreasing score,
      padded with -1.
    num_valid: int32 scalar, number of non-padding entries of keep.
  """
  _check_nms_args(boxes, scores, max_output)
  max_output = int(max_output)
  n = boxes.shape[0]
  if n == 0:
    return jnp.full((max_output,), -1, jnp.int32), jnp.zeros((), jnp.int32)
  scores = scores.astype(jnp.float32)
  if valid is None:
    valid = jnp.ones((n,), bool)
  valid = valid & ~jnp.isnan(scores)
  # Stable sort on (invalid, -score) keeps invalid entries last and equal
  # scores in index order, as torchvision's CPU kernel does.
  order = jnp.lexsort((-scores, ~valid))
  tiles, alive = _tiles(boxes.astype(jnp.float32)[order], valid[order],
                        min(int(tile_size), n))
  keep, count = _keep_tiles(tiles, alive,
                            jnp.asarray(iou_threshold, jnp.float32),
                            max_output)
  pos = jnp.nonzero(keep.reshape(-1)[:n], size=max_output, fill_value=-1)[0]
  idx = jnp.where(pos >= 0, order[jnp.maximum(pos, 0)], -1).astype(jnp.int32)
  return idx, jnp.minimum(count, max_output).astype(jnp.int32)


def _tiles(boxes, alive, t):
  """[N, 4], [N] -> [T, t, 4] boxes and [T, t] alive, zero-padded to
  whole tiles of length t."""
  num_tiles = -(-boxes.shape[0] // t)
  pad = num_tiles * t - boxes.shape[0]
  return (jnp.pad(boxes, ((0, pad), (0, 0))).reshape(num_tiles, t, 4),
          jnp.pad(alive, (0, pad)).reshape(num_tiles, t))


def _keep_tiles(tiles, alive, thr, max_output):
  """Greedy NMS over score-sorted tiles, one tile after another until
  max_output boxes are kept -> ([T, t] bool kept, int32 count kept)."""
  # Loop counters start from the inputs (zero times a count of them), so
  # that under shard_map they vary over the same axes as what the loops
  # compute from the inputs: JAX's varying-axes check requires it.
  zero = jnp.sum(alive[0], dtype=jnp.int32) * 0

  def tile_step(state):
    i, keep, count = state
    tile_alive = _suppress_by_earlier(tiles, keep, alive[i], i, thr, zero)
    k = _resolve_tile(tiles[i], tile_alive, thr)
    return i + 1, keep.at[i].set(k), count + jnp.sum(k, dtype=jnp.int32)

  def not_done(state):
    i, _, count = state
    return (i < tiles.shape[0]) & (count < max_output)

  _, keep, count = jax.lax.while_loop(
      not_done, tile_step, (zero, jnp.zeros_like(alive), zero))
  return keep, count


def _suppress_by_earlier(tiles, keep, tile_alive, i, thr, zero):
  """tile_alive [t] less the boxes of tile i that overlap a box kept in
  tiles 0..i-1."""
  def by_tile(j, tile_alive):
    over = _pairwise_iou(tiles[i], tiles[j]) > thr
    return tile_alive & ~jnp.any(over & keep[j][None, :], axis=1)
  return jax.lax.fori_loop(zero, i, by_tile, tile_alive)


def _resolve_tile(boxes, tile_alive, thr):
  """Greedy NMS inside one tile [t, 4]: iterates `keep_i = alive_i and no
  kept j < i overlaps i` to its fixed point -> [t] bool kept."""
  t = boxes.shape[0]
  earlier = jnp.arange(t)[None, :] < jnp.arange(t)[:, None]  # [i, j]: j < i
  over = (_pairwise_iou(boxes, boxes) > thr) & earlier

  def body(state):
    k, _ = state
    k_new = tile_alive & ~jnp.any(over & k[None, :], axis=1)
    return k_new, jnp.any(k_new != k)

  changed = jnp.any(tile_alive) | True  # varies as the inputs do
  return jax.lax.while_loop(lambda s: s[1], body, (tile_alive, changed))[0]


def batched_nms(boxes, scores, labels, iou_threshold, max_output, valid=None,
                tile_size=256):
  """NMS within each label, by the coordinate-offset trick of torchvision
  and mmcv: boxes are shifted by label * (max coordinate + 1).

  Args:
    boxes: [N, 4]; scores: [N]; labels: [N] int; valid: optional [N] bool.
    iou_threshold, max_output, tile_size: as in `nms`.
  Returns:
    (keep [max_output] int32 padded with -1, num_valid int32).
  """
  _check_nms_args(boxes, scores, max_output)
  check_rank("batched_nms labels", labels, 1)
  check_same_length("batched_nms boxes", boxes, "batched_nms labels", labels)
  if boxes.shape[0] == 0:
    return nms(boxes, scores, iou_threshold, max_output)
  b = boxes.astype(jnp.float32)
  if valid is None:
    max_coord = jnp.max(b)
  else:
    max_coord = jnp.max(jnp.where(valid[:, None], b, -jnp.inf))
    max_coord = jnp.where(jnp.isfinite(max_coord), max_coord, 0.0)
  offsets = labels.astype(jnp.float32) * (max_coord + 1.0)
  return nms(b + offsets[:, None], scores, iou_threshold, max_output,
             valid=valid, tile_size=tile_size)
