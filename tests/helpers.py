"""Shared test fixtures: a tiny generated shapes dataset and real batches."""
import contextlib
import functools
import os
import subprocess
import sys
import tempfile

import numpy as np

from scnet_jax.data import loader
from scnet_jax.data.coco import CocoSource
from scnet_jax.data.shapes import ensure_dataset
from scnet_jax.models import batch_keys
from scnet_jax.predictor import load_config
from tests.xla_flags import xla_flags

SHAPES_ROOT = os.path.join(tempfile.gettempdir(), "scnet_jax_test_shapes")
# Reference facts copied into the repository (fixtures/README.md).
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@functools.lru_cache(maxsize=1)
def shapes_root():
  ensure_dataset(SHAPES_ROOT, num_train=48, num_val=16, size=128, seed=0,
                 log=lambda *a: None)
  return SHAPES_ROOT


# The event JAX's monitoring records each time a jitted function needs an
# executable it does not hold yet: compiled, or read from the persistent
# compilation cache (not when its in-memory cache has it).
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compiles():
  """Yields a list that gets the name of the function of each XLA
  compilation in the block."""
  import jax
  seen = []

  def listener(name, *args, fun_name="?", **kwargs):
    if name == BACKEND_COMPILE:
      seen.append(fun_name)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield seen
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def shapes_flags():
  """Command-line overrides that point a tiny config at the test dataset."""
  return [f"--config.data.shapes.root={shapes_root()}",
          "--config.data.shapes.num_train=48",
          "--config.data.shapes.num_val=16"]


def run_command(*args, devices=1):
  """`python *args` (a script of the repository or -m module) in the
  repository root on `devices` CPU devices; output captured."""
  return subprocess.run([sys.executable, *args], capture_output=True,
                        text=True, cwd=ROOT,
                        env=dict(os.environ, XLA_FLAGS=xla_flags(devices)))


def tiny_config(family="scnet", **overrides):
  """configs/<family>_tiny_shapes.py on the test dataset, 2 images a step,
  with `overrides` ("a.b": value)."""
  c = load_config(os.path.join(ROOT, "configs", f"{family}_tiny_shapes.py"))
  c.data.shapes.update(root=shapes_root(), num_train=48, num_val=16)
  c.global_batch = 2
  for k, v in overrides.items():
    target = c
    *path, last = k.split(".")
    for p in path:
      target = target[p]
    target[last] = v
  return c


def train_batches(config, num_steps, batch=None):
  src = CocoSource(f"{shapes_root()}/annotations/train.json",
                   f"{shapes_root()}/train")
  c = config.copy_and_resolve_references()
  if batch:
    c.global_batch = batch
  it, _ = loader.train_iterator(src, c, num_steps)
  keys = batch_keys(c, train=True)
  return [{k: b[k] for k in keys} for b, _ in zip(it, range(num_steps))]


def losses_fn(config, seed=0):
  """(losses_of(params) -> named losses of one training batch with a fixed
  sampling key, the initial params, the model)."""
  import jax
  from scnet_jax.models import build_model
  from scnet_jax.training.state import init_variables
  model = build_model(config)
  params, stats = init_variables(model, config, seed)
  (batch,) = train_batches(config, 1)

  def losses_of(p):
    return model.apply({"params": p, "batch_stats": stats}, batch,
                       method=model.loss,
                       rngs={"sample": jax.random.PRNGKey(0)})
  return losses_of, params, model


def term_grads(losses_of, params, terms):
  """{term: the gradient of that loss term, flattened}: one jitted
  program, one forward pass and a backward pass per term."""
  import jax

  @jax.jit
  def grads(p):
    losses, vjp = jax.vjp(losses_of, p)
    return [vjp({k: np.float32(k == t) for k in losses})[0] for t in terms]
  return dict(zip(terms, (flat(g) for g in grads(params))))


def flat(tree):
  import flax
  return flax.traverse_util.flatten_dict(tree, sep="/")


def max_abs(tree):
  import jax
  return max(float(np.max(np.abs(np.asarray(x)))) for x in
             jax.tree.leaves(tree))


def total_loss_fn(model, batch_stats):
  """(params, batch, key) -> (sum of the losses, the named losses)."""
  def fn(params, batch, key):
    losses = model.apply({"params": params, "batch_stats": batch_stats},
                         batch, method=model.loss, rngs={"sample": key})
    return sum(losses.values()), losses
  return fn


def grad_max(grads, prefix):
  """Largest |gradient| over the flat parameter names under prefix."""
  vals = [np.abs(np.asarray(v)).max() for k, v in grads.items()
          if k.startswith(prefix)]
  assert vals, prefix
  return max(vals)


def trace_train_and_predict(config):
  """The training loss with its gradient and one inference call on a
  training batch, traced with jax.eval_shape: every line of the model's
  Python runs, nothing is compiled. Checks scalar losses and a gradient
  for every parameter; returns (the losses, the detections) as
  ShapeDtypeStructs."""
  import jax
  from scnet_jax.models import build_model
  from scnet_jax.training.state import abstract_variables
  model = build_model(config)
  variables = abstract_variables(model, config)
  params, stats = variables["params"], variables.get("batch_stats", {})
  (batch,) = train_batches(config, 1)
  # The batch statistics are arguments: eval_shape takes abstract values
  # only as arguments, not in a closure.
  (_, losses), grads = jax.eval_shape(
      lambda p, s, b, k: jax.value_and_grad(total_loss_fn(model, s),
                                            has_aux=True)(p, b, k),
      params, stats, batch, jax.random.key(0))
  assert losses and all(v.shape == () for v in losses.values())
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  out = jax.eval_shape(lambda p, s, b: model.apply(
      {"params": p, "batch_stats": s}, b, method=model.predict),
      params, stats, batch)
  return losses, out


def jit_train_and_predict(config):
  """One jitted train step and one inference call, each run on two
  batches: checks finite losses and gradients and a single compilation
  of each; returns (losses, detections of the first batch)."""
  import jax
  from scnet_jax.models import build_model
  from scnet_jax.training.state import init_variables
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  b1, b2 = train_batches(config, 2)
  step = jax.jit(jax.value_and_grad(total_loss_fn(model, stats),
                                    has_aux=True))
  (_, losses), grads = step(params, b1, jax.random.PRNGKey(0))
  assert all(np.isfinite(float(v)) for v in losses.values()), losses
  assert np.isfinite(max_abs(grads))
  with compiles() as again:
    step(params, b2, jax.random.PRNGKey(1))
  assert not again  # new data, same program
  predict = jax.jit(lambda p, b: model.apply(
      {"params": p, "batch_stats": stats}, b, method=model.predict))
  out = predict(params, b1)
  assert np.isfinite(np.asarray(out.boxes)).all()
  with compiles() as again:
    predict(params, b2)
  assert not again
  return losses, out
