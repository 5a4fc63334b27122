"""Post-processing and metrics: ground truth fed back as predictions scores
AP 1.0; faster-coco-eval equals pycocotools on the same results."""
import json

import numpy as np
import torch
import torchvision
from pycocotools.coco import COCO

from scnet_jax.data.coco import CocoSource
from scnet_jax.evaluation.coco_eval import coco_metrics
from scnet_jax.evaluation.postprocess import image_results
from tests.helpers import shapes_root


def _gt_as_detections(src, rec, max_det=20):
  """Ground truth of one image in the model's output format: boxes in
  resized pixels (scale 1 here), 28x28 soft masks from RoIAlign of the GT
  mask over its box (what a perfect mask head would predict)."""
  masks = src.load_masks(rec).astype(np.float32)
  n = len(rec["labels"])
  boxes = rec["boxes"]
  probs = np.zeros((max_det, 28, 28), np.float32)
  if n:
    probs[:n] = torchvision.ops.roi_align(
        torch.tensor(masks[:, None]),
        [b[None] for b in torch.tensor(boxes)], 28, 1.0, 0,
        True)[:, 0].numpy()
  pad = lambda a, shape: np.concatenate([a, np.zeros((max_det - n, *shape),
                                                     a.dtype)])
  det = {"boxes": pad(boxes, (4,)), "scores": pad(np.ones(n, np.float32), ()),
         "labels": pad(rec["labels"], ()), "masks": probs,
         "num_detections": np.int32(n)}
  meta = {"scale": np.ones(2, np.float32),
          "orig_hw": np.array([rec["height"], rec["width"]]),
          "image_id": rec["image_id"]}
  return det, meta


def _gt_results(split="val"):
  root = shapes_root()
  ann = f"{root}/annotations/{split}.json"
  src = CocoSource(ann, f"{root}/{split}", train=False)
  results = []
  for rec in src.records:
    det, meta = _gt_as_detections(src, rec)
    results.extend(image_results(det, meta, np.asarray(src.cat_ids)))
  return ann, results


def test_ground_truth_as_predictions_scores_one(tmp_path):
  ann, results = _gt_results()
  metrics, tables = coco_metrics(ann, results)
  assert metrics["bbox_AP"] == 1.0 and metrics["segm_AP"] == 1.0, tables
  path = tmp_path / "results.json"
  path.write_text(json.dumps(results))
  COCO(ann).loadRes(str(path))  # the official API reads our JSON


def test_evaluators_agree():
  ann, results = _gt_results()
  rng = np.random.default_rng(0)
  noisy = []
  for r in results:  # imperfect predictions, so AP is not trivially 1
    r = dict(r, score=float(rng.uniform(0.05, 1)))
    r["bbox"] = [v + float(rng.normal(0, 2)) for v in r["bbox"]]
    noisy.append(r)
  ours, _ = coco_metrics(ann, noisy, "faster_coco_eval")
  ref, _ = coco_metrics(ann, noisy, "pycocotools")
  assert ours.keys() == ref.keys() and len(ours) == 24
  assert 0.05 < ref["bbox_AP"] < 0.95
  for k in ref:
    np.testing.assert_allclose(ours[k], ref[k], atol=1e-12, err_msg=k)


def test_no_results_gives_zero():
  root = shapes_root()
  metrics, _ = coco_metrics(f"{root}/annotations/val.json", [])
  assert metrics["segm_AP"] == 0.0


def test_segm_ranks_by_mask_score_when_given():
  ann, results = _gt_results()
  cats = sorted({r["category_id"] for r in results})
  ranked = []
  for r in results:
    # The true detection scores low as a box, high as a mask; a copy with
    # the wrong class the other way round.
    ranked.append(dict(r, score=0.5, mask_score=0.9))
    wrong = cats[(cats.index(r["category_id"]) + 1) % len(cats)]
    ranked.append(dict(r, category_id=wrong, score=0.9, mask_score=0.1))
  metrics, _ = coco_metrics(ann, ranked)
  assert metrics["segm_AP"] == 1.0 and metrics["bbox_AP"] < 0.9
  plain = [{k: v for k, v in r.items() if k != "mask_score"}
           for r in ranked]
  assert coco_metrics(ann, plain)[0]["segm_AP"] < 0.9
