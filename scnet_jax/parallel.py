"""Data parallelism: the same per-device step under `jax.pmap` or under
`jax.shard_map` over a one-axis mesh, on every local device, on one host or
many (each host feeds its own devices; call `initialize_distributed` first).
"""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from scnet_jax.errors import ConfigError
from scnet_jax.training.step import AXIS


def initialize_distributed():
  """jax.distributed.initialize() when launched on several processes
  (TPU pod slices are detected by JAX; GPU clusters via the coordinator
  variables, see README)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get(
      "TPU_WORKER_HOSTNAMES") or os.environ.get("SLURM_NTASKS", "1") != "1":
    jax.distributed.initialize()


def check_batch(global_batch):
  """Per-device batch of a global batch; ConfigError if it does not split."""
  n = jax.device_count()
  if global_batch % n:
    raise ConfigError(f"global_batch={global_batch} is not divisible by the "
                      f"{n} devices (set --config.global_batch to a multiple "
                      f"of {n})")
  return global_batch // n


class DataParallel:
  """Wraps a per-device function f(replicated, sharded_batch) -> (replicated,
  replicated) and moves data in and out.

  mode: "pmap" (host batches reshaped to [local_devices, per_device, ...])
  or "shard_map" (global arrays sharded along the mesh axis).
  devices: the devices to use (default: all; single-host only otherwise).
  """

  def __init__(self, mode, fn, donate=True, out_sharded=False,
               devices=None):
    if mode not in ("pmap", "shard_map"):
      raise ConfigError(f"parallel: must be 'pmap' or 'shard_map', got "
                        f"{mode!r}")
    self.mode = mode
    self.local_devices = list(devices or jax.local_devices())
    donate_argnums = (0,) if donate else ()
    if mode == "pmap":
      self.fn = jax.pmap(fn, axis_name=AXIS, donate_argnums=donate_argnums,
                         devices=self.local_devices)
      self.local_sharded = NamedSharding(
          Mesh(np.asarray(self.local_devices), (AXIS,)), P(AXIS))
    else:
      self.mesh = Mesh(np.asarray(devices or jax.devices()), (AXIS,))
      out_specs = P(AXIS) if out_sharded else (P(), P())
      # check_vma=False: JAX's varying-axes check rejects some lax
      # comparisons inside while loops (its own suggested workaround); the
      # step makes its replicated outputs equal with pmean.
      self.fn = jax.jit(jax.shard_map(fn, mesh=self.mesh,
                                      in_specs=(P(), P(AXIS)),
                                      out_specs=out_specs, check_vma=False),
                        donate_argnums=donate_argnums)
      self.replicated = NamedSharding(self.mesh, P())
      self.sharded = NamedSharding(self.mesh, P(AXIS))

  def put_replicated(self, tree):
    if self.mode == "pmap":  # one copy per local device, stacked
      n = len(self.local_devices)
      return jax.device_put(jax.tree.map(
          lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree),
          self.local_sharded)
    return jax.device_put(tree, self.replicated)

  def put_batch(self, batch):
    """Host-local numpy batch [local_batch, ...] -> device input."""
    if self.mode == "pmap":
      n = len(self.local_devices)
      return jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        self.sharded, np.asarray(x)), batch)

  def get_replicated(self, tree):
    """One host copy of a replicated output."""
    if self.mode == "pmap":
      return jax.device_get(jax.tree.map(lambda x: x[0], tree))
    return jax.device_get(jax.tree.map(
        lambda x: x.addressable_data(0), tree))

  def get_sharded(self, tree):
    """This host's rows of a sharded output, as [local_batch, ...]."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: np.asarray(x).reshape(
          -1, *x.shape[2:]), jax.device_get(tree))
    return jax.tree.map(lambda x: np.concatenate(
        [np.asarray(s.data) for s in x.addressable_shards]), tree)

  def __call__(self, replicated, batch):
    return self.fn(replicated, batch)
