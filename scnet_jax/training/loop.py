"""The training loop: data, data-parallel step, logs, checkpoints, resume,
evaluation during and after training. `train(config, workdir)` is what
train.py runs.

The step loop follows big_vision's: the next batches are built and put on
the devices in a background thread (prefetch, 2 deep) while the current
step runs; the metrics stay on the devices and are fetched every
log_every steps (and before every checkpoint and evaluation, so nothing
after a non-finite step is ever saved). On several processes every one
runs this loop on its rows of each global batch; SIGTERM to any of them
stops all at the same step (JAX's preemption sync point) and Orbax writes
each checkpoint once.
"""
import dataclasses
import os
import signal
import time
from typing import Any

import jax
import numpy as np

from scnet_jax import checkpoint, progress
from scnet_jax.data import loader
from scnet_jax.data.sources import train_source
from scnet_jax.errors import ConfigError
from scnet_jax.models import (batch_keys, build_model, resolve_config,
                              resolve_model)
from scnet_jax.parallel import (DataParallel, check_batch,
                                initialize_distributed, sync)
from scnet_jax.training import optim
from scnet_jax.training.evaluations import TrainingEvaluations
from scnet_jax.training.init_weights import load_init_weights
from scnet_jax.training.prefetch import DevicePrefetch
from scnet_jax.training.state import create_state, init_variables, param_count
from scnet_jax.parallel import AXIS
from scnet_jax.training.step import make_train_step
from scnet_jax.training.metric_log import MetricLog
from scnet_jax.training.writers import MetricWriter


class _Preemption:
  """SIGTERM -> stop after a step every process agrees on.

  One process: a flag set by a Python handler. Several: JAX's preemption
  sync manager (its own SIGTERM handler, started by
  jax.distributed.initialize) propagates the notice to every process and
  names the same step for all.
  """

  def __init__(self):
    self.multi = jax.process_count() > 1
    self.requested = False
    if not self.multi:
      self._old = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.requested = True

  def reached(self, step):
    if self.multi:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(int(step))
    return self.requested

  def restore(self):
    if not self.multi:
      signal.signal(signal.SIGTERM, self._old)


def total_steps_of(config, steps_per_epoch):
  if config.total_steps > 0:
    return int(config.total_steps)
  return int(config.num_epochs * steps_per_epoch)


def check_init(config):
  """A config that freezes its stem must start from trained weights."""
  b = resolve_model(config.model).backbone
  if (not config.init_from and b.get("norm") == "frozen_bn" and
      b.get("frozen_stages", -1) >= 0 and not config.allow_random_init):
    raise ConfigError(
        f"init_from is empty, but model.backbone (norm=frozen_bn, "
        f"frozen_stages={b.frozen_stages}) would freeze a random stem: set "
        f"--config.init_from=weights/... (python -m scnet_jax.convert) or "
        f"--config.allow_random_init=True")


def _source(config, log):
  """The training source; process 0 generates the shapes dataset first."""
  if jax.process_index() == 0:
    source = train_source(config, log)
  sync("training data ready")
  if jax.process_index() != 0:
    source = train_source(config, lambda *a: None)
  return source


def train(config, workdir, log=print):
  """Trains (or resumes) in `workdir`; returns the final eval metrics (or
  None when the run stopped early on SIGTERM or evaluates nothing)."""
  initialize_distributed()
  check_batch(config.global_batch)
  os.makedirs(workdir, exist_ok=True)
  show = progress.enabled(config)
  log = progress.logger(log, show)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 config.keep_checkpoints)
  try:
    if ckpt.latest_step() is None:
      check_init(config)
    return _train(config, workdir, ckpt, show, log)
  finally:
    ckpt.close()


@dataclasses.dataclass
class _Run:
  """What the step loop starts from (_prepare)."""
  source: Any
  steps_per_epoch: int
  total: int
  model: Any
  tx: Any
  state: Any          # TrainState on the host
  meta: dict          # checkpoint.make_meta
  start: int          # the first step to run (resumed: the saved one)
  evaluations: TrainingEvaluations


def _train(config, workdir, ckpt, show, log):
  run = _prepare(config, workdir, ckpt, log)
  return _loop(config, workdir, ckpt, run, show, log)


def _prepare(config, workdir, ckpt, log):
  """Data, model, optimiser and state (resumed from the newest checkpoint,
  or from init_from), then the run's config.json and summary line."""
  # The data first: a fault in it is one line before anything compiles.
  source = _source(config, log)
  bucket_of, _ = loader.record_buckets(source, config.data)
  spe = loader.check_steps_per_epoch(source, bucket_of, config.global_batch)
  evaluations = TrainingEvaluations(config, workdir, log)
  model = build_model(config, axis_name=AXIS)
  total = total_steps_of(config, spe)
  t0 = time.perf_counter()
  params, batch_stats = init_variables(model, config, config.seed)
  tx = optim.make_optimizer(config, params, total)
  state = create_state(params, batch_stats, tx, config.seed)
  meta = checkpoint.make_meta(config, state.params, source.class_names)
  start = 0
  if ckpt.latest_step() is not None:
    state, _, start = ckpt.restore(checkpoint.to_host(state), meta, log)
    log(f"Resumed from {workdir}/checkpoints/{start} (step {start} of "
        f"{total})")
  elif config.init_from:
    state = state.replace(params=load_init_weights(
        config, state.params, config.init_from, log))
  if jax.process_index() == 0:
    # Written once the workdir is known to be this model's; every part
    # field included, so configs/from_json.py reproduces the run from it.
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(resolve_config(config).to_json(indent=1))
  workers = loader.resolve_num_workers(config.data.num_workers,
                                       jax.local_device_count())
  log(f"Model {config.model_name}: {param_count(state.params):,} params; "
      f"{len(source)} training images, {spe} steps/epoch, {total} steps, "
      f"global batch {config.global_batch} on {jax.device_count()} devices "
      f"of {jax.process_count()} process(es) ({config.parallel}), "
      f"{workers} data workers per process; init "
      f"{time.perf_counter() - t0:.1f} s")
  return _Run(source, spe, total, model, tx, state, meta, start, evaluations)


def _loop(config, workdir, ckpt, run, show, log):
  """The step loop from run.start, then the evaluation at the end."""
  dp = DataParallel(config.parallel, make_train_step(run.model, run.tx))
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  run.evaluations.start(writer, run.meta, {
      "params": run.state.params, "batch_stats": run.state.batch_stats})
  dstate = dp.put_replicated(run.state)
  run.state = None  # the devices hold it now
  batches = _device_batches(config, run, dp)
  preempt = _Preemption()
  bar = progress.bar(run.total, "train", "step", show, initial=run.start)
  metrics = MetricLog(config=config, dp=dp, writer=writer, ckpt=ckpt,
                      total=run.total, spe=run.steps_per_epoch, bar=bar,
                      log=log)
  faults = _DataFaults(run.source, config, log)
  step = run.start
  try:
    while step < run.total:
      device_batch, dropped, skipped = next(batches)
      faults.add(dropped, skipped)
      dstate, out = dp(dstate, device_batch)
      step += 1
      metrics.add(step, out)
      bar.update(1)
      stop = preempt.reached(step)
      _periodic(config, workdir, ckpt, run, dp, dstate, metrics, step, stop)
      if stop:
        log(f"SIGTERM: saved checkpoint at step {step}; exiting")
        return None
    bar.close()
    faults.report()
    return _evaluate_at_end(config, workdir, run, dp, dstate, step, log)
  finally:
    bar.close()
    batches.close()
    preempt.restore()
    run.evaluations.close()
    writer.close()


def _device_batches(config, run, dp):
  """The training batches from run.start, prepared for the devices in a
  background thread: (device batch, instances dropped, records skipped)."""
  keys = batch_keys(config, train=True)
  host_batches, _ = loader.train_iterator(
      run.source, config, run.total, jax.process_index(),
      jax.process_count(), start_step=run.start,
      local_devices=jax.local_device_count())

  def prepare(batch):
    return (dp.put_batch({k: batch[k] for k in keys}),
            int(np.sum(batch["dropped"])),
            [int(r) for r in batch["skipped"] if r >= 0])
  return DevicePrefetch(host_batches, prepare, depth=2)


def _periodic(config, workdir, ckpt, run, dp, dstate, metrics, step, stop):
  """The log, checkpoint and evaluation due after `step` (a checkpoint
  too when the run stops on SIGTERM)."""
  total = run.total
  save = stop or step % config.checkpoint_every == 0 or step == total
  evaluate = (config.eval_every_steps > 0 and step < total and
              step % config.eval_every_steps == 0 and
              run.evaluations.ann_file)
  # Fetching the metrics first stops a non-finite run before it saves.
  if metrics.due(step) or save or evaluate:
    metrics.flush(step)
  if save or evaluate:
    # The state as it lies on the devices: Orbax copies it to the host as
    # it saves, the evaluation program reads it in place.
    state = dp.replicated_view(dstate)
  if save:
    ckpt.save(step, state, {"step": step}, run.meta,
              wait=stop or step == total)
  if evaluate:
    run.evaluations(step, state,
                    os.path.join(workdir, "eval", "during_training"))
    metrics.restart_clock()


def _evaluate_at_end(config, workdir, run, dp, dstate, step, log):
  """The final metrics on data.val (and prediction pictures), or None
  when the config evaluates nothing at the end."""
  if not (config.eval_at_end and run.evaluations.ann_file):
    return None
  out_dir = os.path.join(workdir, "eval")
  metrics = run.evaluations(step, dp.replicated_view(dstate), out_dir)
  if config.visualize_at_end and jax.process_index() == 0:
    from scnet_jax.evaluation.pictures import write_prediction_pictures
    paths = write_prediction_pictures(
        os.path.join(out_dir, "results.json"), run.evaluations.ann_file,
        run.evaluations.image_dir, os.path.join(out_dir, "vis"),
        config.visualize_at_end, 0.3, class_names=run.meta["class_names"])
    log(f"wrote {len(paths)} prediction pictures to {out_dir}/vis")
  sync("evaluation written")
  return metrics


class _DataFaults:
  """Counts what the data left out (instances beyond data.max_instances,
  unreadable images replaced) and says so."""

  def __init__(self, source, config, log):
    self.source, self.config, self.log = source, config, log
    self.dropped = self.skipped = 0

  def add(self, dropped, skipped):
    self.dropped += dropped
    for r in skipped:
      self.skipped += 1
      why = loader.read_error(self.source, r) or "could not be read"
      self.log(f"warning: training image skipped: {why}; replaced by the "
               f"next readable image of its bucket ({self.skipped} so far)")

  def report(self):
    if self.dropped:
      self.log(f"warning: {self.dropped} instances beyond "
               f"data.max_instances={self.config.data.max_instances} were "
               f"dropped")
    if self.skipped:
      self.log(f"warning: {self.skipped} unreadable training images were "
               f"skipped (each replaced by a readable one)")
