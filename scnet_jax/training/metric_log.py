"""The training metrics between the devices and the logs (training/loop.py).

A step's metrics stay on the devices until a log, checkpoint or evaluation
step fetches every step's since the last one, so the host does not wait on
the devices each step; a fetch writes them to the metric files, stops the
run at a non-finite step (before anything after it is saved) and, every
log_every steps, logs the losses and the training rate.
"""
import time

import jax
import numpy as np

from scnet_jax.errors import NonFiniteLossError
from scnet_jax.training import optim

# Steps dispatched ahead of the one whose result the host waits for.
IN_FLIGHT = 2


class MetricLog:
  """dp: the train step's DataParallel; writer: writers.MetricWriter;
  ckpt: the run's Checkpointer (named in the non-finite error); spe:
  steps per epoch; bar: the progress bar."""

  def __init__(self, *, config, dp, writer, ckpt, total, spe, bar, log):
    self.config, self.dp, self.writer, self.ckpt = config, dp, writer, ckpt
    self.total, self.spe, self.bar, self.log = total, spe, bar, log
    self.schedule = optim.lr_schedule(config, total, np)
    self.window = []  # (step, metrics on the devices) not fetched yet
    self.first = True  # the first fetch reports the compile instead
    self.restart_clock()

  def restart_clock(self):
    """The training rate counts from now (after an evaluation)."""
    self.t, self.images = time.perf_counter(), 0

  def add(self, step, metrics):
    """Keeps a dispatched step's metrics; waits for the step IN_FLIGHT
    before it, which bounds how far the host runs ahead."""
    self.window.append((step, metrics))
    if not self.first:
      self.images += self.config.global_batch
    if len(self.window) > IN_FLIGHT:
      jax.block_until_ready(self.window[-IN_FLIGHT - 1][1]["loss"])

  def due(self, step):
    """Whether `step` is one the log reports."""
    return (self.first or step == self.total or
            step % self.config.log_every == 0)

  def flush(self, step):
    """Fetches, checks and writes the window's metrics; logs at a log
    step."""
    fetched = self.dp.get_replicated([m for _, m in self.window])
    steps = [s for s, _ in self.window]
    self.window.clear()
    for s, m in zip(steps, fetched):
      record = {k: float(v) for k, v in m.items() if k != "finite"}
      if not m["finite"]:
        self.writer.flush()
        raise self._non_finite(s, record)
      record.update(step=s, epoch=s / self.spe,
                    lr=float(self.schedule(s - 1)))
      self.writer.write(s, record)
    self.writer.flush()
    if self.first:
      self.log(f"compile + first step: {time.perf_counter() - self.t:.1f} s")
      self.first = False
      self.restart_clock()
    elif step % self.config.log_every == 0 or step == self.total:
      self._report(step, record)

  def _non_finite(self, step, record):
    bad = [k for k, v in record.items() if not np.isfinite(v)]
    last = self.ckpt.latest_step()
    where = (f"re-running the same command resumes from the last good "
             f"checkpoint, step {last}, with its data position"
             if last is not None else
             "no checkpoint was written yet: re-running starts over")
    return NonFiniteLossError(
        f"step {step}: non-finite loss term(s) {', '.join(bad)}; stopped "
        f"without saving; {where} (if it recurs, lower base_lr or set "
        f"grad_clip_norm)")

  def _report(self, step, record):
    dt = time.perf_counter() - self.t
    ips = self.images / dt if dt > 0 else 0.0
    # Every loss term, whatever its stage prefix (s3., ext., ...).
    losses = " ".join(f"{k}={v:.4f}" for k, v in sorted(record.items())
                      if k not in ("step", "epoch", "lr", "grad_norm"))
    self.log(f"step {step}/{self.total} epoch {step / self.spe:.2f} "
             f"{ips:.1f} img/s lr={record['lr']:.5f} {losses}")
    self.bar.set_postfix_str(f"loss={record['loss']:.3f} {ips:.1f} img/s")
    self.restart_clock()
