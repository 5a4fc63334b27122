"""train.py end to end: exact resume (also after SIGTERM), SIGKILL during
saves, a run stopped on a non-finite loss resuming from its last good
checkpoint, an unreadable training image skipped and counted, a frozen
stem without initial weights refused, and clear errors for bad input.
One file: its tests share the uninterrupted reference run."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from scnet_jax.checkpoint import Checkpointer
from scnet_jax.data import loader
from scnet_jax.data.coco import CocoSource
from scnet_jax.training.writers import read_metrics
from tests.helpers import shapes_root, tiny_config
from tests.xla_flags import xla_flags

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "mask_rcnn_tiny_shapes.py")


def _args(workdir, steps, *extra, config=CONFIG):
  return [sys.executable, os.path.join(ROOT, "train.py"), "--config", config,
          "--workdir", str(workdir), f"--config.total_steps={steps}",
          "--config.lr_decay_epochs=()", "--config.global_batch=2",
          "--config.eval_at_end=False", "--config.checkpoint_every=2",
          "--config.log_every=1", f"--config.data.shapes.root={shapes_root()}",
          "--config.data.shapes.num_train=48",
          "--config.data.shapes.num_val=16", *extra]


def _env():
  return dict(os.environ, XLA_FLAGS=xla_flags(2),
              PYTHONPATH=ROOT)


def _train(workdir, steps, *extra, check=True, config=CONFIG):
  p = subprocess.run(_args(workdir, steps, *extra, config=config),
                     capture_output=True,
                     text=True, env=_env(), cwd=ROOT)
  if check and p.returncode:
    raise AssertionError(p.stdout + p.stderr)
  return p


def _params(workdir):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  step = ckpt.latest_step()
  state = ckpt.manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore()))["state"]
  ckpt.close()
  import jax
  return step, jax.tree.leaves(state["params"])


def _assert_runs_equal(a, b, steps):
  sa, pa = _params(a)
  sb, pb = _params(b)
  assert sa == sb == steps
  for x, y in zip(pa, pb):
    np.testing.assert_array_equal(x, y)
  ma, mb = read_metrics(a), read_metrics(b)
  assert sorted(ma) == sorted(mb) == list(range(1, steps + 1))
  for s in ma:
    assert ma[s] == mb[s], s


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  ref = tmp_path_factory.mktemp("ref")
  _train(ref, 6)
  return ref


def test_config_json_alone_reproduces_the_run(reference, tmp_path):
  """WORKDIR/config.json (every field) through configs/from_json.py,
  with no other flag: the same parameters and the same losses."""
  config = f"{os.path.join(ROOT, 'configs', 'from_json.py')}:" \
      f"{reference / 'config.json'}"
  p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                      "--config", config, "--workdir", str(tmp_path)],
                     capture_output=True, text=True, env=_env(), cwd=ROOT)
  assert p.returncode == 0, p.stdout + p.stderr
  _assert_runs_equal(reference, tmp_path, 6)


def test_resume_equals_uninterrupted(reference, tmp_path):
  _train(tmp_path, 3)
  _train(tmp_path, 6)
  _assert_runs_equal(reference, tmp_path, 6)


def test_sigterm_saves_and_resumes_exactly(reference, tmp_path):
  p = subprocess.Popen(_args(tmp_path, 6, "--config.checkpoint_every=100"),
                       env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
  metrics = tmp_path / "metrics.jsonl"
  while p.poll() is None and not (metrics.exists() and
                                  metrics.read_text().count("\n") >= 1):
    time.sleep(0.2)
  p.send_signal(signal.SIGTERM)
  out = p.communicate(timeout=300)[0]
  assert p.returncode == 0, out
  assert "SIGTERM: saved checkpoint" in out
  stopped = _params(tmp_path)[0]
  assert 1 <= stopped < 6
  _train(tmp_path, 6)
  _assert_runs_equal(reference, tmp_path, 6)


def test_sigkill_during_saves_resumes_from_a_complete_checkpoint(tmp_path):
  p = subprocess.Popen(_args(tmp_path, 50, "--config.checkpoint_every=1"),
                       env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
  metrics = tmp_path / "metrics.jsonl"
  while p.poll() is None and not (metrics.exists() and
                                  metrics.read_text().count("\n") >= 4):
    time.sleep(0.05)
  p.kill()  # a save is in flight at nearly every moment here
  p.wait()
  # An interrupted save leaves only a temporary folder, never a step.
  os.makedirs(tmp_path / "checkpoints" / "99.orbax-checkpoint-tmp-1")
  last = _params(tmp_path)[0]
  assert last is not None and last < 99
  out = _train(tmp_path, last + 2).stdout
  assert "Resumed from" in out
  assert _params(tmp_path)[0] == last + 2


def test_bad_input_gives_one_line_errors(tmp_path):
  p = _train(tmp_path, 2, "--config.no_such_key=1", check=False)
  assert p.returncode != 0 and "no_such_key" in p.stderr
  assert "Traceback" not in p.stderr
  p = _train(tmp_path, 2, "--config.global_batch=3", check=False)
  assert p.returncode == 2 and "not divisible by the 2 devices" in p.stderr
  assert "Traceback" not in p.stderr


def test_workdir_of_another_model_is_refused(reference):
  other = os.path.join(ROOT, "configs", "cascade_mask_rcnn_tiny_shapes.py")
  p = subprocess.run(_args(reference, 8, config=other), capture_output=True,
                     text=True, env=_env(), cwd=ROOT)
  assert p.returncode == 2, p.stderr
  (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
  assert "does not fit the configured model" in line
  assert re.search(r": parameter \S+ is \(.*\) in the checkpoint but "
                   r"\(.*\) in the model$", line), line


def test_non_finite_loss_resumes_from_the_last_good_checkpoint(reference,
                                                               tmp_path):
  _train(tmp_path, 2)
  # The clip (35) stays: the optimiser state keeps its structure.
  p = _train(tmp_path, 6, "--config.base_lr=1e30", check=False)
  assert p.returncode == 2, p.stdout + p.stderr
  assert "Traceback" not in p.stderr
  (err,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
  assert "non-finite loss term(s)" in err and "step 2" in err
  assert _params(tmp_path)[0] == 2  # nothing after the bad step was saved
  out = _train(tmp_path, 6).stdout
  assert "Resumed from" in out and "(step 2 of 6)" in out
  _assert_runs_equal(reference, tmp_path, 6)


def test_unreadable_training_image_is_skipped_and_counted(tmp_path):
  root = shapes_root()
  src = CocoSource(f"{root}/annotations/train.json", f"{root}/train")
  config = tiny_config("mask_rcnn")
  bucket_of, _ = loader.record_buckets(src, config.data)
  plan = loader.TrainPlan(bucket_of, 2, config.seed, 0.5, 2)
  bad = src[plan[0][0]]["path"]  # read by the first step
  images = tmp_path / "images"
  shutil.copytree(f"{root}/train", images)
  with open(images / os.path.basename(bad), "wb") as f:
    f.write(b"not a png")
  p = _train(tmp_path / "run", 2, f"--config.data.train.image_dir={images}")
  assert "Traceback" not in p.stderr
  assert f"training image skipped: {images / os.path.basename(bad)}: " \
      "cannot decode image" in p.stdout
  assert "1 unreadable training images were skipped" in p.stdout
  assert _params(tmp_path / "run")[0] == 2


def test_frozen_stem_without_init_is_refused_unless_allowed(tmp_path):
  frozen = ("--config.model.backbone.norm=frozen_bn",
            "--config.model.backbone.frozen_stages=1")
  p = _train(tmp_path, 1, *frozen, check=False)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  (err,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
  assert "init_from is empty" in err
  assert "allow_random_init" in err
  assert not os.path.exists(tmp_path / "checkpoints" / "1")
  p = _train(tmp_path, 1, *frozen, "--config.allow_random_init=True")
  assert _params(tmp_path)[0] == 1
