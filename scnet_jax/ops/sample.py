"""Padded sampling of positives and negatives (mmdet RandomSampler).

Two rules pick the boxes: "random" (mmdetection's RandomSampler, uniform
subsets) and "first" (the lowest-index eligible boxes, in index order):
the same counts and order, no randomness, which is what mmdetection
computes with its `random_choice(gallery, num)` replaced by
`gallery[:num]`. "first" makes a training step deterministic for
comparisons with another implementation; it is not meant for training.
"""
import jax
import jax.numpy as jnp

from scnet_jax.ops.assign import NEGATIVE, POSITIVE

SAMPLERS = ("random", "first")


def sample_boxes(key, label, num, pos_fraction, sampler="random"):
  """Picks up to `num` boxes: at most int(num * pos_fraction) positives,
  the rest negatives, by the rule `sampler` (SAMPLERS).

  Positives come first, then negatives, then unfilled slots (as mmdet's
  SamplingResult orders them).

  Args:
    key: PRNG key (unused by "first").
    label: [N] int32 from `max_iou_assign` (1 pos, 0 neg, -1 ignore).
    num: static number of slots.
    pos_fraction: float.
    sampler: static, one of SAMPLERS.
  Returns:
    index: [num] int32 into the N boxes (0 in unfilled slots).
    valid: [num] bool, slot holds a sample.
    is_pos: [num] bool.
    num_pos: int32 scalar.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"sampler: one of {SAMPLERS}, got {sampler!r}")
  n = label.shape[0]
  max_pos = int(num * pos_fraction)
  if sampler == "random":
    # A uniform random priority: top-k of it is a uniform random subset.
    k_pos, k_neg = jax.random.split(key)
    pos_pri = jax.random.uniform(k_pos, (n,))
    neg_pri = jax.random.uniform(k_neg, (n,))
  else:
    # Decreasing with the index: top-k takes the first eligible ones.
    pos_pri = neg_pri = n - jnp.arange(n, dtype=jnp.int32)
  # -1 for ineligible entries, below every eligible priority.
  pos_pri = jnp.where(label == POSITIVE, pos_pri, -1)
  neg_pri = jnp.where(label == NEGATIVE, neg_pri, -1)
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
