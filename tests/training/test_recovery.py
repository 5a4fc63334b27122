"""Recovery from the command line: a run stopped on a non-finite loss
resumes from its last good checkpoint and ends where an uninterrupted run
ends; an unreadable training image is skipped and counted; a frozen stem
without initial weights is refused. One readable line each, no
traceback."""
import os
import shutil

import numpy as np

from scnet_jax.data import loader
from scnet_jax.data.coco import CocoSource
from tests.helpers import shapes_root, tiny_config
from tests.training.test_resume import (_assert_runs_equal, _params, _train,
                                        reference)  # noqa: F401 (fixture)


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
