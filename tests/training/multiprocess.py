"""Launching train.py / eval.py as several JAX processes on this machine
(the README's environment variables), each with its own CPU devices."""
import os
import socket
import subprocess
import sys

from tests.xla_flags import xla_flags

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(devices, process=None, num_processes=None, port=None):
  e = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
           XLA_FLAGS=xla_flags(devices))
  for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
            "JAX_PROCESS_ID"):
    e.pop(k, None)
  if process is not None:
    e.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
             JAX_NUM_PROCESSES=str(num_processes),
             JAX_PROCESS_ID=str(process))
  return e


def start(args, num_processes, devices_each, logdir):
  """Starts `num_processes` processes of `args` (stdout+stderr to
  logdir/p{i}.log); returns the Popen list."""
  port = free_port()
  procs = []
  for i in range(num_processes):
    log = open(os.path.join(logdir, f"p{i}.log"), "w")
    procs.append(subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT,
        env=env(devices_each, i, num_processes, port)))
    log.close()
  return procs


def wait(procs, logdir, timeout=300):
  """Waits for all; kills all on timeout or failure of any. Returns the
  logs (process order)."""
  try:
    for p in procs:
      p.wait(timeout=timeout)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  logs = [open(os.path.join(logdir, f"p{i}.log")).read()
          for i in range(len(procs))]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def run(args, num_processes, devices_each, logdir, timeout=300):
  os.makedirs(logdir, exist_ok=True)
  if num_processes == 1:
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=env(
        devices_each), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return [p.stdout + p.stderr]
  return wait(start(args, num_processes, devices_each, logdir), logdir,
              timeout)
