"""The console commands pyproject.toml installs (scnet-train, scnet-eval,
scnet-predict, scnet-export) are the scripts they stand for, and every
command answers --help with its usage and flags."""
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.xla_flags import xla_flags

BIN = os.path.dirname(sys.executable)
COMMANDS = {"scnet-train": ("train.py",),
            "scnet-eval": ("eval.py",),
            "scnet-predict": ("-m", "scnet_jax.predict_images"),
            "scnet-export": ("-m", "scnet_jax.export")}


def _help(*command):
  return subprocess.run([*command, "--help"], capture_output=True, text=True,
                        cwd=ROOT, env=dict(os.environ, XLA_FLAGS=xla_flags()))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_console_command_is_its_script(name):
  installed = _help(os.path.join(BIN, name))
  script = _help(sys.executable, *COMMANDS[name])
  assert installed.stdout == script.stdout != ""
  assert "--config" in installed.stdout and "Traceback" not in (
      installed.stderr + script.stderr)
  # Shell continuations print as written (raw docstrings).
  if name != "scnet-export":
    assert "\\\n" in installed.stdout


def test_inspect_answers_help():
  p = _help(sys.executable, "-m", "scnet_jax.summary")
  assert "--print_config" in p.stdout and "Traceback" not in p.stderr
