"""One step on 8 devices x 1 image equals one step on 1 device x 8 images,
under pmap and under shard_map."""
import jax
import numpy as np
import pytest

from scnet_jax.models import build_model
from scnet_jax.parallel import DataParallel
from scnet_jax.training import optim
from scnet_jax.training.state import create_state, init_variables
from scnet_jax.parallel import AXIS
from scnet_jax.training.step import make_train_step
from tests.helpers import tiny_config, train_batches


@pytest.fixture(scope="module")
def setup():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  config = tiny_config("scnet", global_batch=8)
  model = build_model(config, axis_name=AXIS)
  params, stats = init_variables(model, config, 0)
  tx = optim.make_optimizer(config, params, 100)
  state = create_state(params, stats, tx, 0)
  (batch,) = train_batches(config, 1, batch=8)
  return model, tx, state, batch


def _run(setup, mode, devices):
  model, tx, state, batch = setup
  dp = DataParallel(mode, make_train_step(model, tx), donate=False,
                    devices=devices)
  new, metrics = dp(dp.put_replicated(state), dp.put_batch(batch))
  return dp.get_replicated(new), dp.get_replicated(metrics)


def _assert_same(a, b):
  (sa, ma), (sb, mb) = a, b
  assert set(ma) == set(mb)
  for k in ma:
    np.testing.assert_allclose(ma[k], mb[k], rtol=2e-4, atol=1e-5, err_msg=k)
  for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-6)


@pytest.fixture(scope="module")
def single(setup):
  return _run(setup, "pmap", jax.devices()[:1])


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_eight_devices_equal_one(setup, single, mode):
  multi = _run(setup, mode, jax.devices())
  assert multi[1]["finite"] == 1.0
  # The step changed the parameters, so equality is not vacuous.
  before = jax.tree.leaves(setup[2].params)
  after = jax.tree.leaves(multi[0].params)
  assert max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(before, after)) > 1e-6
  _assert_same(multi, single)


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_the_state_is_read_where_it_lies(mode):
  """replicated_view gives the train state as replicated device arrays
  (what checkpoints are written from); an evaluation program on the
  local devices takes them without a host copy (under shard_map, the
  very buffers); the train step may then donate the state again."""
  import jax.numpy as jnp
  step = DataParallel(mode, lambda r, b: (
      jax.tree.map(lambda x: x + 1, r), jax.lax.pmean(jnp.sum(b), AXIS)))
  state, _ = step(step.put_replicated({"w": np.arange(6.0).reshape(2, 3)}),
                  step.put_batch(np.ones((8, 1), np.float32)))
  view = step.replicated_view(state)["w"]
  assert view.shape == (2, 3) and view.sharding.is_fully_replicated
  np.testing.assert_array_equal(np.asarray(view),
                                np.arange(6.0).reshape(2, 3) + 1)
  evaluate = DataParallel(mode, lambda r, b: (r, jnp.sum(b)), donate=False,
                          devices=jax.local_devices())
  local = evaluate.put_replicated({"w": view})["w"]
  np.testing.assert_array_equal(evaluate.get_replicated(local),
                                np.asarray(view))
  if mode == "shard_map":
    ptrs = lambda x: sorted(s.data.unsafe_buffer_pointer()
                            for s in x.addressable_shards)
    assert ptrs(local) == ptrs(state["w"])
  state, _ = step(state, step.put_batch(np.ones((8, 1), np.float32)))
  np.testing.assert_array_equal(step.get_replicated(state)["w"],
                                np.arange(6.0).reshape(2, 3) + 2)
