"""A run's PRNG streams are named and distinct: no two (seed, stream)
pairs share a key (with streams numbered seed, seed + 1, seed + 2, seed
s's sampling stream was seed s + 1's initialisation), and every sampling
site of the models draws from a key of its own."""
import jax
import numpy as np

from scnet_jax.models.structures import keys_for
from scnet_jax.training.state import seed_key

SITES = ["rpn", "box_stage_0", "box_stage_1", "box_stage_2", "mask_stage_0",
         "mask_stage_1", "mask_stage_2", "mnc_relabel", "comask_jitter",
         "comask_subset"] + [f"level_{level}" for level in range(5)]


def test_no_two_seeds_and_streams_share_a_key():
  keys = {(seed, name):
          tuple(np.asarray(jax.random.key_data(seed_key(seed, name))).tolist())
          for seed in range(50) for name in ("params", "sample", "train")}
  assert len(set(keys.values())) == len(keys) == 150


def test_every_sampling_site_draws_its_own_keys():
  image_keys = jax.random.split(jax.random.key(0), 4)
  drawn = [np.asarray(jax.random.key_data(keys_for(image_keys, name)))
           for name in SITES]
  rows = {tuple(row.tolist()) for keys in drawn for row in keys}
  assert len(rows) == len(SITES) * 4
  # The same name gives the same keys: a global batch draws the same
  # however it is split over devices.
  np.testing.assert_array_equal(
      jax.random.key_data(keys_for(image_keys[2:], "rpn")), drawn[0][2:])
