"""A one-stage model's image-level masks through the command lines and the
Predictor: train.py (final evaluation and pictures), eval.py (COCO
results that load, pictures beside the ground truth),
scnet_jax.predict_images on files of other sizes, and Predictor; eval.py
--tta refused in one line.

SOLO, whose image-level masks are AggMask's kind too. Four training steps
leave scores and masks near their 0.01 prior, so every threshold is set
to 0 and every cell becomes a candidate (the 50 best before Matrix NMS,
to keep it quick): the point here is the plumbing (the masks' kind,
stride, crop and resize to each original image), which
test_image_masks.py checks against torch and pycocotools."""
import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from scnet_jax import Predictor
from tests.helpers import ROOT, run_command, shapes_flags, shapes_root

CONFIG = os.path.join(ROOT, "configs", "solo_tiny_shapes.py")
ANY_MASK = ["--config.model.test.mask_thr=0.0",
            "--config.model.test.score_thr=0.0",
            "--config.model.test.filter_thr=0.0",
            "--config.model.test.nms_pre=50"]


def _run(command, *args):
  """command: a script, or ("-m", module)."""
  command = command if isinstance(command, tuple) else (command,)
  return run_command(*command, "--config", CONFIG, *args, *ANY_MASK,
                     *shapes_flags())


def test_image_masks_through_train_eval_predict(tmp_path):
  work = tmp_path / "run"
  p = _run("train.py", "--workdir", str(work), "--config.total_steps=4",
           "--config.global_batch=2", "--config.visualize_at_end=2")
  assert p.returncode == 0, p.stderr
  assert "final: bbox AP" in p.stdout
  assert len(os.listdir(work / "eval" / "vis")) == 2

  p = _run("eval.py", "--checkpoint", str(work), "--output",
           str(tmp_path / "eval"), "--visualize", "1", "--compare_gt")
  assert p.returncode == 0, p.stderr
  results = json.loads((tmp_path / "eval" / "results.json").read_text())
  assert results
  coco = COCO(f"{shapes_root()}/annotations/val.json")
  coco.loadRes(str(tmp_path / "eval" / "results.json"))
  for r in results[:50]:
    img = coco.imgs[r["image_id"]]
    assert mask_utils.decode(r["segmentation"]).shape == (img["height"],
                                                          img["width"])
  with Image.open(next((tmp_path / "eval" / "vis").iterdir())) as pic:
    assert pic.width >= 2 * 512

  folder = tmp_path / "images"
  folder.mkdir()
  first = sorted(os.listdir(f"{shapes_root()}/val"))[0]
  shape = np.asarray(Image.open(f"{shapes_root()}/val/{first}"))
  Image.fromarray(shape).resize((200, 150)).save(folder / "wide.png")
  p = _run(("-m", "scnet_jax.predict_images"), "--checkpoint", str(work),
           "--images", str(folder), "--out", str(tmp_path / "pred"),
           "--pictures", "--score_thr=0.0")
  assert p.returncode == 0, p.stderr
  (r, *_) = json.loads((tmp_path / "pred" / "results.json").read_text())
  assert mask_utils.decode(r["segmentation"]).shape == (150, 200)

  from scnet_jax.predictor import load_config
  c = load_config(CONFIG)
  c.model.test.update(mask_thr=0.0, score_thr=0.0, filter_thr=0.0,
                      nms_pre=50)
  predictor = Predictor.from_checkpoint(c, str(work))
  for h, w in [(128, 128), (90, 100)]:
    out = predictor(np.zeros((h, w, 3), np.uint8))
    n = len(out["scores"])
    assert n > 0 and out["masks"].shape == (n, h, w)
    # mask_thr 0: each mask covers the whole image (its canvas crop).
    assert out["masks"].all()
    np.testing.assert_allclose(out["boxes"][0], [0, 0, w, h], atol=1e-3)


def test_tta_refused_in_one_line(tmp_path):
  p = _run("eval.py", "--checkpoint", str(tmp_path), "--tta")
  assert p.returncode == 2
  assert p.stderr.strip().splitlines()[-1].startswith(
      "error: eval.py --tta: test-time augmentation merges RPN")
  assert "Traceback" not in p.stderr
