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
import concurrent.futures
import os
import signal
import time

import jax
import numpy as np

from scnet_jax import checkpoint, progress
from scnet_jax.data import loader
from scnet_jax.data.sources import train_source, val_paths
from scnet_jax.errors import ConfigError, NonFiniteLossError
from scnet_jax.models import build_model, resolve_config, resolve_model
from scnet_jax.parallel import (DataParallel, check_batch,
                                initialize_distributed, sync)
from scnet_jax.training import optim
from scnet_jax.training.init_weights import load_init_weights
from scnet_jax.training.prefetch import DevicePrefetch
from scnet_jax.training.state import create_state, init_variables, param_count
from scnet_jax.training.step import AXIS, make_train_step
from scnet_jax.training.writers import MetricWriter

# Steps dispatched ahead of the one whose result the host waits for.
IN_FLIGHT = 2


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


class _Evaluations:
  """Evaluation during and after training: metrics.jsonl/TensorBoard
  `val/*` records and the best checkpoint (workdir/best, by
  config.best_metric) kept apart from the rolling ones."""

  def __init__(self, config, workdir, log):
    """Reads and checks the validation annotations (before anything
    compiles: a fault there is reported at once)."""
    from scnet_jax.evaluation.inference import Evaluator
    self.config, self.workdir, self.log = config, workdir, log
    self.ann_file, self.image_dir = val_paths(config)
    self.writer = self.meta = None
    self.evaluator = None
    self._compiling = None   # Future of the program compiled in a thread
    self.best = None
    self.best_value = None
    if self.ann_file and (config.eval_every_steps > 0 or config.eval_at_end):
      self.evaluator = Evaluator(
          config, ann_file=self.ann_file, image_dir=self.image_dir,
          evaluator=config.evaluator,
          per_device_batch=config.eval_batch_per_device, log=log)

  def start(self, writer, meta, variables):
    """Opens workdir/best and compiles the evaluation's program in a
    thread: the training step's compile leaves a CPU core idle for most
    of its time, so the evaluation's compile costs nothing there (20 s of
    a tiny run on 2 cores). An error in it is raised by the first
    evaluation."""
    self.writer, self.meta = writer, meta
    if self.config.eval_every_steps > 0 and self.ann_file:
      self.best = checkpoint.Checkpointer(
          os.path.join(self.workdir, "best"), 1)
      step = self.best.latest_step()
      if step is not None:
        self.best_value = self.best.read_meta(step).get("best_value")
    if self.evaluator is not None:
      pool = concurrent.futures.ThreadPoolExecutor(1)
      self._compiling = pool.submit(self._compile, variables)
      pool.shutdown(wait=False)

  def _compile(self, variables):
    t0 = time.perf_counter()
    self.evaluator.compile(variables)
    self.log(f"evaluation program compiled beside training: "
             f"{time.perf_counter() - t0:.1f} s")

  def __call__(self, step, state, out_dir):
    c = self.config
    if self._compiling is not None:
      self._compiling.result()
      self._compiling = None
    metrics = self.evaluator(
        {"params": state.params, "batch_stats": state.batch_stats}, out_dir,
        desc=f"eval @ {step}")
    record = {f"val/{k}": float(v) for k, v in metrics.items()
              if k.startswith(("bbox_", "segm_"))}
    self.writer.write(step, dict(record, step=step))
    self.writer.flush()
    name = c.best_metric
    if self.best is not None and name in metrics:
      value = float(metrics[name])
      if self.best_value is None or value > self.best_value:
        self.best_value = value
        self.best.save(step, state, {"step": step},
                       dict(self.meta, best_metric=name, best_value=value),
                       wait=True)
        self.log(f"step {step}: best {name} so far ({value:.4f}); saved in "
                 f"{self.workdir}/best/{step}")
    return metrics

  def close(self):
    if self.best is not None:
      self.best.close()


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


def _train(config, workdir, ckpt, show, log):
  # The data first: a fault in it is one line before anything compiles.
  source = _source(config, log)
  bucket_of, _ = loader.record_buckets(source, config.data)
  spe = loader.check_steps_per_epoch(source, bucket_of, config.global_batch)
  evaluations = _Evaluations(config, workdir, log)
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
  log(f"Model {config.model_name}: "
      f"{param_count(state.params):,} "
      f"params; {len(source)} training images, {spe} steps/epoch, "
      f"{total} steps, global batch {config.global_batch} on "
      f"{jax.device_count()} devices of {jax.process_count()} process(es) "
      f"({config.parallel}), {workers} data workers per process; init "
      f"{time.perf_counter() - t0:.1f} s")

  model_keys = model.batch_keys(train=True)
  dp = DataParallel(config.parallel, make_train_step(model, tx))
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  evaluations.start(writer, meta, {"params": state.params,
                                   "batch_stats": state.batch_stats})
  dstate = dp.put_replicated(state)
  del state
  schedule = optim.lr_schedule(config, total, np)
  host_batches, _ = loader.train_iterator(
      source, config, total, jax.process_index(), jax.process_count(),
      start_step=start, local_devices=jax.local_device_count())

  def prepare(batch):
    return (dp.put_batch({k: batch[k] for k in model_keys}),
            int(np.sum(batch["dropped"])),
            [int(r) for r in batch["skipped"] if r >= 0])

  batches = DevicePrefetch(host_batches, prepare, depth=2)
  preempt = _Preemption()
  bar = progress.bar(total, "train", "step", show, initial=start)
  counts = dict(dropped=0, skipped=0)
  window = []  # (step, metrics on the devices) not yet fetched
  clock = dict(t=time.perf_counter(), images=0, first=True)

  def flush(step):
    """Fetches the window's metrics, writes them, stops on a non-finite
    step."""
    fetched = dp.get_replicated([m for _, m in window])
    steps = [s for s, _ in window]
    window.clear()
    for s, m in zip(steps, fetched):
      record = {k: float(v) for k, v in m.items() if k != "finite"}
      if not m["finite"]:
        writer.flush()
        bad = [k for k, v in record.items() if not np.isfinite(v)]
        last = ckpt.latest_step()
        where = (f"re-running the same command resumes from the last "
                 f"good checkpoint, step {last}, with its data position"
                 if last is not None else
                 "no checkpoint was written yet: re-running starts over")
        raise NonFiniteLossError(
            f"step {s}: non-finite loss term(s) {', '.join(bad)}; stopped "
            f"without saving; {where} (if it recurs, lower base_lr or set "
            f"grad_clip_norm)")
      record.update(step=s, epoch=s / spe, lr=float(schedule(s - 1)))
      writer.write(s, record)
    writer.flush()
    now = time.perf_counter()
    if clock["first"]:
      log(f"compile + first step: {now - clock['t']:.1f} s")
      clock.update(t=now, images=0, first=False)
      return
    if step % config.log_every == 0 or step == total:
      dt = now - clock["t"]
      ips = clock["images"] / dt if dt > 0 else 0.0
      # Every loss term, whatever its stage prefix (s3., ext., ...).
      losses = " ".join(f"{k}={v:.4f}" for k, v in sorted(record.items())
                        if k not in ("step", "epoch", "lr", "grad_norm"))
      log(f"step {step}/{total} epoch {step / spe:.2f} {ips:.1f} img/s "
          f"lr={record['lr']:.5f} {losses}")
      bar.set_postfix_str(f"loss={record['loss']:.3f} {ips:.1f} img/s")
      clock.update(t=now, images=0)

  step = start
  try:
    while step < total:
      device_batch, dropped, skipped = next(batches)
      counts["dropped"] += dropped
      for r in skipped:
        counts["skipped"] += 1
        why = loader.read_error(source, r) or "could not be read"
        log(f"warning: training image skipped: {why}; replaced by the next "
            f"readable image of its bucket ({counts['skipped']} so far)")
      dstate, metrics = dp(dstate, device_batch)
      step += 1
      window.append((step, metrics))
      if not clock["first"]:
        clock["images"] += config.global_batch
      if len(window) > IN_FLIGHT:
        # Bounds how far the host runs ahead of the devices.
        jax.block_until_ready(window[-IN_FLIGHT - 1][1]["loss"])
      bar.update(1)
      stop = preempt.reached(step)
      save = stop or step % config.checkpoint_every == 0 or step == total
      periodic = (config.eval_every_steps > 0 and step < total and
                  step % config.eval_every_steps == 0 and
                  evaluations.ann_file)
      if (clock["first"] or save or periodic or step == total or
          step % config.log_every == 0):
        flush(step)
      if save or periodic:
        host_state = dp.get_replicated(dstate)
      if save:
        ckpt.save(step, host_state, {"step": step}, meta,
                  wait=stop or step == total)
      if periodic:
        evaluations(step, host_state,
                    os.path.join(workdir, "eval", "during_training"))
        clock.update(t=time.perf_counter(), images=0)
      if stop:
        log(f"SIGTERM: saved checkpoint at step {step}; exiting")
        return None
    bar.close()
    if counts["dropped"]:
      log(f"warning: {counts['dropped']} instances beyond "
          f"data.max_instances={config.data.max_instances} were dropped")
    if counts["skipped"]:
      log(f"warning: {counts['skipped']} unreadable training images were "
          f"skipped (each replaced by a readable one)")
    if not (config.eval_at_end and evaluations.ann_file):
      return None
    final = dp.get_replicated(dstate)
    out_dir = os.path.join(workdir, "eval")
    metrics = evaluations(step, final, out_dir)
    if config.visualize_at_end and jax.process_index() == 0:
      from scnet_jax.evaluation.pictures import write_prediction_pictures
      paths = write_prediction_pictures(
          os.path.join(out_dir, "results.json"), evaluations.ann_file,
          evaluations.image_dir, os.path.join(out_dir, "vis"),
          config.visualize_at_end, 0.3, class_names=meta["class_names"])
      log(f"wrote {len(paths)} prediction pictures to {out_dir}/vis")
    sync("evaluation written")
    return metrics
  finally:
    bar.close()
    batches.close()
    preempt.restore()
    evaluations.close()
    writer.close()
