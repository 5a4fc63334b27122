"""Data parallelism: the same per-device step under `jax.pmap` or under
`jax.shard_map` over a one-axis mesh of every device of every process.

On several processes (hosts) each one feeds its own rows of the global
batch to its own devices; collectives (`lax.pmean` in the step) then span
all devices of all processes. Device order is process-major: process p's
devices hold rows [p * B / P, (p + 1) * B / P) of a global batch B, the
rows the loader gives it. Call `initialize_distributed` before anything
else touches JAX.
"""
import collections
import json
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from scnet_jax.errors import ConfigError

# The data-parallel axis: the mesh's, pmap's and the loss normalisers'.
AXIS = "data"


def initialize_distributed():
  """Joins the other processes of a multi-process run, if this is one.

  JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID start it explicitly (JAX itself reads only the first);
  TPU pod slices and SLURM are detected by JAX. CPU devices use gloo
  collectives across processes. Returns the process count.
  """
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if address:
    missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
               if not os.environ.get(k, "").strip().isdigit()]
    if missing:
      raise ConfigError(f"JAX_COORDINATOR_ADDRESS={address} is set but "
                        f"{' and '.join(missing)} is not (a non-negative "
                        f"integer is needed)")
    num = int(os.environ["JAX_NUM_PROCESSES"])
    index = int(os.environ["JAX_PROCESS_ID"])
    if not 0 <= index < num:
      raise ConfigError(f"JAX_PROCESS_ID={index} is not below "
                        f"JAX_NUM_PROCESSES={num}")
    if num > 1:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(address, num, index)
  elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get(
      "SLURM_NTASKS", "1") != "1":
    jax.distributed.initialize()
  return jax.process_count()


def check_batch(global_batch):
  """Per-device batch of a global batch; ConfigError if it does not split."""
  n = jax.device_count()
  if global_batch % n:
    raise ConfigError(f"global_batch={global_batch} is not divisible by the "
                      f"{n} devices (set --config.global_batch to a multiple "
                      f"of {n})")
  return global_batch // n


def global_devices():
  """All devices, process-major (the order of the rows of a batch)."""
  return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


class DataParallel:
  """Wraps a per-device function f(replicated, sharded_batch) -> (replicated,
  replicated) and moves data in and out.

  mode: "pmap" (host batches reshaped to [local_devices, per_device, ...])
  or "shard_map" (global arrays sharded along the mesh axis).
  devices: the devices to use; default all devices of all processes.
    `jax.local_devices()` gives a program of this process alone (no
    collectives across processes: evaluation, prediction); a subset of
    the devices is for a single process only.
  """

  def __init__(self, mode, fn, donate=True, out_sharded=False,
               devices=None):
    if mode not in ("pmap", "shard_map"):
      raise ConfigError(f"parallel: must be 'pmap' or 'shard_map', got "
                        f"{mode!r}")
    self.mode = mode
    devices = list(devices or global_devices())
    local = [d for d in devices if d.process_index == jax.process_index()]
    self.spans_processes = len(local) < len(devices)
    if self.spans_processes and len(devices) != jax.device_count():
      raise ConfigError("DataParallel: a multi-process program runs on all "
                        "devices of all processes")
    self.local_devices = local
    self._compiled = {}  # input signature -> executable
    # Every device of the program: replicated_view's arrays live on it.
    self.mesh = Mesh(np.asarray(devices), (AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    self.local_mesh = Mesh(np.asarray(local), (AXIS,))
    self.local_sharded = NamedSharding(self.local_mesh, P(AXIS))
    donate_argnums = (0,) if donate else ()
    if mode == "pmap":
      # JAX needs the same device list on every process: all of them
      # (devices=None) when the program spans processes.
      self.fn = jax.pmap(fn, axis_name=AXIS, donate_argnums=donate_argnums,
                         devices=None if self.spans_processes else devices)
    else:
      out_specs = P(AXIS) if out_sharded else (P(), P())
      # JAX's varying-axes check stays on: an output declared replicated
      # (P()) must be computed as such, e.g. through the step's pmean.
      self.fn = jax.jit(jax.shard_map(fn, mesh=self.mesh,
                                      in_specs=(P(), P(AXIS)),
                                      out_specs=out_specs),
                        donate_argnums=donate_argnums)
      self.sharded = NamedSharding(self.mesh, P(AXIS))

  def put_replicated(self, tree):
    """Host tree (equal on every process), or replicated device arrays
    holding a copy on each of this program's local devices (e.g. another
    program's `replicated_view`) -> one copy per device. Such device
    arrays are reused where they lie, not copied through the host; any
    other array goes through the host."""
    return jax.tree.map(self._put_replicated, tree)

  def _put_replicated(self, x):
    copies = ({s.device: s.data for s in x.addressable_shards
               if s.data.shape == x.shape}
              if isinstance(x, jax.Array) else {})
    if all(d in copies for d in self.local_devices):
      if self.mode == "pmap":
        return jax.make_array_from_single_device_arrays(
            (len(self.local_devices), *x.shape), self.local_sharded,
            [copies[d][None] for d in self.local_devices])
      return jax.make_array_from_single_device_arrays(
          x.shape, self.replicated, [copies[d] for d in self.local_devices])
    if self.mode == "pmap":  # one copy per local device, stacked
      n = len(self.local_devices)
      return jax.device_put(np.broadcast_to(np.asarray(x), (n, *np.shape(x))),
                            self.local_sharded)
    return jax.make_array_from_process_local_data(
        self.replicated, np.asarray(x), np.shape(x))

  def replicated_view(self, tree):
    """A replicated output of this program (the train state) as arrays
    replicated over the program's devices, made of each device's own
    copy, without a host copy: what a checkpoint is written from (Orbax
    copies to the host as it saves) and what an evaluation program takes
    (put_replicated). shard_map's outputs already are such arrays;
    pmap's stacked ones are unstacked on their devices."""
    if self.mode == "shard_map":
      return tree

    def view(x):
      copies = {s.device: s.data[0] for s in x.addressable_shards}
      return jax.make_array_from_single_device_arrays(
          x.shape[1:], self.replicated,
          [copies[d] for d in self.local_devices])
    return jax.tree.map(view, tree)

  def put_batch(self, batch):
    """Host-local numpy batch [local_batch, ...] -> device input (copied
    to the devices now, so that a prefetch thread can do it)."""
    if self.mode == "pmap":
      n = len(self.local_devices)
      return jax.device_put(jax.tree.map(
          lambda x: x.reshape(n, -1, *x.shape[1:]), batch),
          self.local_sharded)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        self.sharded, np.asarray(x)), batch)

  def get_replicated(self, tree):
    """One host copy of a replicated output."""
    first = (lambda x: x.addressable_data(0)[0]) if self.mode == "pmap" \
        else (lambda x: x.addressable_data(0))
    return jax.device_get(jax.tree.map(first, tree))

  def get_sharded(self, tree):
    """This process's rows of a sharded output, as [local_batch, ...]."""
    def local_rows(x):
      shards = sorted(x.addressable_shards, key=lambda s: _start(s.index[0]))
      rows = np.concatenate([np.asarray(s.data) for s in shards])
      return rows.reshape(-1, *x.shape[2:]) if self.mode == "pmap" else rows
    return jax.tree.map(local_rows, tree)

  def compile(self, replicated, batch):
    """Compiles the program for these device inputs (put_replicated,
    put_batch) without running it; returns True when it was not compiled
    yet."""
    return self._executable(replicated, batch)[1]

  def _executable(self, replicated, batch):
    """(the compiled program for these inputs, whether it was compiled
    now)."""
    leaves, tree = jax.tree.flatten((replicated, batch))
    signature = (tree, tuple((x.shape, x.dtype) for x in leaves))
    if signature in self._compiled:
      return self._compiled[signature], False
    self._compiled[signature] = self.fn.lower(replicated, batch).compile()
    return self._compiled[signature], True

  def __call__(self, replicated, batch):
    # The first run of a program opens gloo's context, whose rendezvous
    # gives up after 30 s, and on a busy host one process can finish
    # compiling (or start its data workers) more than 30 s after another:
    # each compiles first, then all start it together.
    if self.mode == "pmap":
      if self.spans_processes and self.compile(replicated, batch):
        sync("compiled")
      # pmap's compiled program cannot be called with host-local arrays:
      # the pmap runs, with the executable compile() left in JAX's cache.
      return self.fn(replicated, batch)
    program, new = self._executable(replicated, batch)
    if new and self.spans_processes:
      sync("compiled")
    return program(replicated, batch)


def _start(index):
  return index if isinstance(index, int) else index.start or 0


def gather_json(obj):
  """The JSON-serialisable `obj` of every process, in process order (on
  one process: [obj]). Travels through the devices' collectives, so no
  shared file system is needed. Waits for every process first (`sync`):
  their shares of the work before it (evaluation, process 0's scoring)
  can differ by more than gloo's 30 s."""
  if jax.process_count() == 1:
    return [obj]
  sync("gather")
  from jax.experimental import multihost_utils
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.int64(len(data)))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[:len(data)] = data
  every = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:int(n)]).decode()) for row, n in
          zip(every, np.ravel(sizes))]


_BARRIERS = collections.Counter()


def sync(name, timeout_s=1800):
  """Waits until every process reaches the point `name` (at most
  timeout_s). A barrier of JAX's coordination service, not a device
  collective (multihost_utils.sync_global_devices): the first collective
  opens gloo's context, whose rendezvous gives up after 30 s, and process
  0 alone may spend longer than that generating the shapes dataset while
  the others wait here. Orbax's barrier function is that barrier through
  a public API (JAX has none of its own)."""
  if jax.process_count() > 1:
    from orbax.checkpoint import multihost
    _BARRIERS[name] += 1   # a barrier's id serves once
    multihost.get_barrier_sync_fn()(key=f"{name}/{_BARRIERS[name]}",
                                    timeout_ms=timeout_s * 1000)
