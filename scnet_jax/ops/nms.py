"""Exact greedy non-maximum suppression with static shapes.

Boxes are sorted by score and processed in tiles of `tile_size`. A tile is
first suppressed by the boxes already kept in earlier tiles (tile-by-tile
IoU blocks, skipping tiles that kept nothing), then resolved internally by
iterating `keep_i = alive_i and no kept j < i overlaps i` to its fixed point,
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
  sorted_boxes = boxes.astype(jnp.float32)[order]
  alive = valid[order]

  t = min(int(tile_size), n)
  num_tiles = -(-n // t)
  pad = num_tiles * t - n
  sorted_boxes = jnp.pad(sorted_boxes, ((0, pad), (0, 0)))
  alive = jnp.pad(alive, (0, pad))
  tiles = sorted_boxes.reshape(num_tiles, t, 4)
  alive = alive.reshape(num_tiles, t)
  thr = jnp.asarray(iou_threshold, jnp.float32)
  earlier = jnp.arange(t)[None, :] < jnp.arange(t)[:, None]  # [i, j]: j < i

  def suppress_by_tile(j, carry):
    tile_alive, keep, i = carry
    def hit():
      over = _pairwise_iou(tiles[i], tiles[j]) > thr
      return tile_alive & ~jnp.any(over & keep[j][None, :], axis=1)
    tile_alive = jax.lax.cond(jnp.any(keep[j]), hit, lambda: tile_alive)
    return tile_alive, keep, i

  def within_tile(tile_alive, i):
    over = (_pairwise_iou(tiles[i], tiles[i]) > thr) & earlier

    def body(state):
      k, _ = state
      k_new = tile_alive & ~jnp.any(over & k[None, :], axis=1)
      return k_new, jnp.any(k_new != k)

    # Initial carries derive from the inputs so that, under shard_map, they
    # have the same (varying) type as the loop's outputs.
    changed = jnp.any(tile_alive) | True
    k, _ = jax.lax.while_loop(lambda s: s[1], body, (tile_alive, changed))
    return k

  def tile_step(state):
    i, keep, count = state
    tile_alive, _, _ = jax.lax.fori_loop(0, i, suppress_by_tile,
                                         (alive[i], keep, i))
    k = within_tile(tile_alive, i)
    return i + 1, keep.at[i].set(k), count + jnp.sum(k, dtype=jnp.int32)

  def not_done(state):
    i, _, count = state
    return (i < num_tiles) & (count < max_output)

  keep0 = jnp.zeros_like(alive)
  _, keep, count = jax.lax.while_loop(
      not_done, tile_step,
      (jnp.int32(0), keep0, jnp.sum(keep0, dtype=jnp.int32)))
  keep = keep.reshape(-1)[:n]
  pos = jnp.nonzero(keep, size=max_output, fill_value=-1)[0]
  idx = jnp.where(pos >= 0, order[jnp.maximum(pos, 0)], -1).astype(jnp.int32)
  return idx, jnp.minimum(count, max_output).astype(jnp.int32)


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
