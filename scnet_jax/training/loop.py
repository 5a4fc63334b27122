"""The training loop: data, data-parallel step, logs, checkpoints, resume,
final evaluation. `train(config, workdir)` is what train.py runs."""
import json
import os
import signal
import time

import jax
import numpy as np

from scnet_jax import checkpoint
from scnet_jax.data import loader
from scnet_jax.data.sources import train_source, val_paths
from scnet_jax.errors import NonFiniteLossError
from scnet_jax.models import build_model
from scnet_jax.parallel import DataParallel, check_batch, initialize_distributed
from scnet_jax.training import optim
from scnet_jax.training.init_weights import load_init_weights
from scnet_jax.training.state import create_state, init_variables
from scnet_jax.training.step import AXIS, make_train_step
from scnet_jax.training.writers import MetricWriter

class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step."""

  def __init__(self):
    self.requested = False
    self._old = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._old)


def total_steps_of(config, steps_per_epoch):
  if config.total_steps > 0:
    return int(config.total_steps)
  return int(config.num_epochs * steps_per_epoch)


def train(config, workdir, log=print):
  """Trains (or resumes) in `workdir`; returns the final eval metrics (or
  None when the run stopped early on SIGTERM)."""
  initialize_distributed()
  check_batch(config.global_batch)
  os.makedirs(workdir, exist_ok=True)
  source = train_source(config, log)
  model = build_model(config, axis_name=AXIS)
  bucket_of, _ = loader.record_buckets(source, config.data)
  spe = loader.steps_per_epoch(bucket_of, config.global_batch)
  total = total_steps_of(config, spe)
  t0 = time.perf_counter()
  params, batch_stats = init_variables(model, config, config.seed)
  tx = optim.make_optimizer(config, params, total)
  state = create_state(params, batch_stats, tx, config.seed)
  meta = checkpoint.make_meta(config, state.params, source.class_names)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 config.keep_checkpoints)
  batches, _ = loader.train_iterator(
      source, config, total, jax.process_index(), jax.process_count())
  start = 0
  if ckpt.latest_step() is not None:
    host_state, data_state, start = ckpt.restore(
        checkpoint.to_host(state), meta)
    state = host_state
    batches.set_state(data_state)
    log(f"Resumed from {workdir}/checkpoints/{start} (step {start} of "
        f"{total})")
  elif config.init_from:
    state = state.replace(params=load_init_weights(
        config, state.params, config.init_from, log))
  # Written once the workdir is known to be this model's.
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  log(f"Model {config.model_name}: "
      f"{sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)):,} "
      f"params; {len(source)} training images, {spe} steps/epoch, "
      f"{total} steps, global batch {config.global_batch} on "
      f"{jax.device_count()} devices ({config.parallel}); init "
      f"{time.perf_counter() - t0:.1f} s")

  model_keys = model.batch_keys(train=True)
  dp = DataParallel(config.parallel, make_train_step(model, tx))
  dstate = dp.put_replicated(state)
  schedule = optim.lr_schedule(config, total)
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  preempt = _Preemption()
  step = start
  dropped = 0
  window_t, window_images = time.perf_counter(), 0
  try:
    while step < total:
      batch = next(batches)
      dropped += int(np.sum(batch["dropped"]))
      model_batch = {k: batch[k] for k in model_keys}
      t_step = time.perf_counter()
      dstate, metrics = dp(dstate, dp.put_batch(model_batch))
      metrics = dp.get_replicated(metrics)
      if step == start:
        log(f"compile + first step: {time.perf_counter() - t_step:.1f} s")
        window_t = time.perf_counter()
      else:
        window_images += config.global_batch
      step += 1
      if not metrics["finite"]:
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        keep_state = dp.get_replicated(dstate)
        ckpt.save(step - 1, keep_state.replace(step=keep_state.step - 1),
                  None, meta, wait=True)
        raise NonFiniteLossError(
            f"step {step}: non-finite loss term(s) {', '.join(bad)}; the "
            f"last good state is saved in {workdir}/checkpoints/{step - 1}")
      lr = float(schedule(step - 1))
      record = {k: float(v) for k, v in metrics.items() if k != "finite"}
      record.update(step=step, epoch=step / spe, lr=lr)
      writer.write(step, record)
      if step % config.log_every == 0 or step == total:
        dt = time.perf_counter() - window_t
        ips = window_images / dt if dt > 0 and window_images else 0.0
        losses = " ".join(f"{k}={v:.4f}" for k, v in sorted(record.items())
                          if k.startswith(("loss", "s0", "s1", "s2")) or
                          k == "loss")
        log(f"step {step}/{total} epoch {step / spe:.2f} "
            f"{ips:.1f} img/s lr={lr:.5f} {losses}")
        window_t, window_images = time.perf_counter(), 0
      if preempt.requested or step % config.checkpoint_every == 0 or \
          step == total:
        ckpt.save(step, dp.get_replicated(dstate), batches.get_state(), meta,
                  wait=preempt.requested or step == total)
      if preempt.requested:
        log(f"SIGTERM: saved checkpoint at step {step}; exiting")
        return None
  finally:
    preempt.restore()
    writer.close()
    ckpt.close()
  if dropped:
    log(f"warning: {dropped} instances beyond data.max_instances="
        f"{config.data.max_instances} were dropped")

  ann_file, image_dir = val_paths(config)
  if not (config.eval_at_end and ann_file):
    return None
  from scnet_jax.evaluation.inference import evaluate
  final = dp.get_replicated(dstate)
  variables = {"params": final.params, "batch_stats": final.batch_stats}
  out_dir = os.path.join(workdir, "eval")
  metrics = evaluate(config, variables, ann_file=ann_file,
                     image_dir=image_dir, output_dir=out_dir,
                     evaluator=config.evaluator,
                     per_device_batch=config.eval_batch_per_device, log=log)
  if config.visualize_at_end:
    from scnet_jax.evaluation.pictures import write_prediction_pictures
    paths = write_prediction_pictures(
        config, variables, workdir, ann_file, image_dir,
        os.path.join(out_dir, "vis"), config.visualize_at_end, 0.3)
    log(f"wrote {len(paths)} prediction pictures to {out_dir}/vis")
  return metrics
