"""Timing helpers shared by the bench scripts: steady-state timings exclude
compilation, which is reported on its own line."""
import platform
import time

import jax
import numpy as np


def machine():
  dev = jax.devices()[0]
  return (f"{platform.processor() or platform.machine()}, "
          f"{jax.device_count()} x {dev.platform}:{dev.device_kind}, "
          f"jax {jax.__version__}")


def time_jax(fn, *args, repeats=5):
  """(compile_plus_first_s, median steady-state s) of a jitted call."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return first, float(np.median(times))


def time_call(fn, *args, repeats=5, warmup=1):
  """Median seconds of a plain (e.g. PyTorch) call after warm-up."""
  for _ in range(warmup):
    fn(*args)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn(*args)
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def report(rows, ratio):
  """rows: [(name, peer_s, ours_s or None)]; prints a table, then
  'ratio: X'."""
  print(f"machine: {machine()}")
  print(f"{'case':<46} {'peer ms':>10} {'ours ms':>10} {'speed-up':>9}")
  for name, peer, ours in rows:
    if ours is None:  # a stage only the peer runs
      print(f"{name:<46} {peer * 1e3:>10.2f} {'-':>10} {'-':>9}")
    else:
      print(f"{name:<46} {peer * 1e3:>10.2f} {ours * 1e3:>10.2f} "
            f"{peer / ours:>9.2f}")
  print(f"ratio: {ratio:.3f}")
