"""Padded random sampling of positives and negatives (mmdet RandomSampler)."""
import jax
import jax.numpy as jnp

from scnet_jax.ops.assign import NEGATIVE, POSITIVE


def random_sample(key, label, num, pos_fraction):
  """Picks up to `num` boxes: at most int(num * pos_fraction) positives,
  the rest negatives, chosen uniformly at random.

  Positives come first, then negatives, then unfilled slots (as mmdet's
  SamplingResult orders them).

  Args:
    key: PRNG key.
    label: [N] int32 from `max_iou_assign` (1 pos, 0 neg, -1 ignore).
    num: static number of slots.
    pos_fraction: float.
  Returns:
    index: [num] int32 into the N boxes (0 in unfilled slots).
    valid: [num] bool, slot holds a sample.
    is_pos: [num] bool.
    num_pos: int32 scalar.
  """
  n = label.shape[0]
  max_pos = int(num * pos_fraction)
  k_pos, k_neg = jax.random.split(key)
  pos = label == POSITIVE
  neg = label == NEGATIVE
  # A uniform random priority, -1 for ineligible entries: top-k of it is a
  # uniform random subset of the eligible ones.
  pos_pri = jnp.where(pos, jax.random.uniform(k_pos, (n,)), -1.0)
  neg_pri = jnp.where(neg, jax.random.uniform(k_neg, (n,)), -1.0)
  kp = min(max_pos, n)
  kn = min(num, n)
  pos_val, pos_idx = jax.lax.top_k(pos_pri, kp)
  neg_val, neg_idx = jax.lax.top_k(neg_pri, kn)
  num_pos = jnp.sum(pos_val >= 0, dtype=jnp.int32)
  num_neg = jnp.minimum(jnp.sum(neg_val >= 0, dtype=jnp.int32), num - num_pos)
  slot = jnp.arange(num, dtype=jnp.int32)
  pos_idx = jnp.pad(pos_idx, (0, num - kp))
  neg_slot = jnp.clip(slot - num_pos, 0, kn - 1)
  is_pos = slot < num_pos
  index = jnp.where(is_pos, pos_idx, neg_idx[neg_slot]).astype(jnp.int32)
  valid = slot < num_pos + num_neg
  index = jnp.where(valid, index, 0)
  return index, valid, is_pos, num_pos
