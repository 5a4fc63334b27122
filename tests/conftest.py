"""Test-session settings: 8 host CPU devices, XLA flags that favour
compile time (tests/xla_flags.py), and one XLA compilation cache that
lives as long as the run."""
import gc
import os
import shutil
import tempfile

import pytest

from tests.xla_flags import xla_flags

# 8 host devices for the data-parallel tests; must be set before jax loads.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_CACHE = "JAX_COMPILATION_CACHE_DIR"
_made = []


def pytest_configure(config):
  """Many tests, and the train.py / eval.py processes they start, compile
  the same tiny programs: one cache serves them all (programs compiled in
  over a second; keys hash the program and the compile options). It is
  made for this run and removed after it, so the suite's time does not
  depend on what ran on the machine before. xdist workers start after
  this with its environment, and so share the controller's cache."""
  if hasattr(config, "workerinput"):
    return
  if _CACHE not in os.environ:
    _made.append(tempfile.mkdtemp(prefix="scnet_jax_xla_cache_"))
    os.environ[_CACHE] = _made[0]
  # The test dataset, generated once before any worker reads it.
  from tests.helpers import shapes_root
  shapes_root()


def pytest_unconfigure(config):
  for path in _made:
    shutil.rmtree(path, ignore_errors=True)


# Directories whose files run longest first, so that the two workers
# finish together instead of one waiting on the other's last long file.
_FIRST = ("training", "models", "evaluation", "convert")


def pytest_collection_modifyitems(session, config, items):
  def rank(item):
    folder = item.nodeid.split("/")[1:-1]   # [] for tests/test_*.py
    if folder and folder[0] in _FIRST:
      return _FIRST.index(folder[0])
    return len(_FIRST) + bool(folder)       # then tests/*.py, data, ops
  items.sort(key=rank)  # stable: the order within a rank stays


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """A worker runs dozens of files and each compiles its own programs:
  dropping them after each file keeps a worker's memory flat (programs a
  later file needs again come back from the compilation cache)."""
  yield
  import jax
  jax.clear_caches()
  gc.collect()
