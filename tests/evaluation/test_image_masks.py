"""Image-level masks (Detections.mask_kind == 'image', as a one-stage head
predicts them): brought into the original image as mmdet's SOLO does
(torch's bilinear interpolate), and ground truth fed as such predictions
scores AP 1.0."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scnet_jax.data.coco import CocoSource
from scnet_jax.evaluation.coco_eval import coco_metrics
from scnet_jax.evaluation.postprocess import image_results
from scnet_jax.models.structures import IMAGE_MASKS
from scnet_jax.ops.paste import paste_image_masks
from tests.helpers import shapes_root


@pytest.mark.parametrize("stride,canvas,resized,orig", [
    (4, (96, 128), (90, 120), (300, 400)),
    (8, (64, 64), (61, 40), (45, 30)),
    (1, (32, 48), (32, 47), (32, 47)),
])
def test_resize_equals_torch_interpolate(stride, canvas, resized, orig):
  rng = np.random.default_rng(stride)
  masks = rng.uniform(0, 1, (3, canvas[0] // stride, canvas[1] // stride))
  masks = masks.astype(np.float32)
  ours = paste_image_masks(masks, stride, resized, orig, threshold=None)
  t = F.interpolate(torch.tensor(masks)[None], size=canvas,
                    mode="bilinear", align_corners=False)
  t = t[:, :, :resized[0], :resized[1]]
  ref = F.interpolate(t, size=orig, mode="bilinear",
                      align_corners=False)[0].numpy()
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  np.testing.assert_array_equal(
      paste_image_masks(masks, stride, resized, orig, threshold=0.5),
      ref > 0.5)


def test_ground_truth_as_image_masks_scores_one():
  root = shapes_root()
  ann = f"{root}/annotations/val.json"
  src = CocoSource(ann, f"{root}/val", train=False)
  results = []
  d = 20
  for rec in src.records:
    n = len(rec["labels"])
    h, w = rec["height"], rec["width"]
    masks = np.zeros((d, h + 32, w + 32), np.float32)  # padded canvas
    masks[:n, :h, :w] = src.load_masks(rec)
    pad = lambda a, shape: np.concatenate([a, np.zeros((d - n, *shape),
                                                       a.dtype)])
    det = {"boxes": pad(rec["boxes"], (4,)),
           "scores": pad(np.ones(n, np.float32), ()),
           "labels": pad(rec["labels"], ()), "masks": masks,
           "num_detections": np.int32(n), "mask_kind": IMAGE_MASKS,
           "mask_stride": 1}
    meta = {"scale": np.ones(2, np.float32), "orig_hw": np.array([h, w]),
            "image_id": rec["image_id"]}
    results.extend(image_results(det, meta, np.asarray(src.cat_ids)))
  metrics, tables = coco_metrics(ann, results, "pycocotools")
  assert metrics["bbox_AP"] == 1.0 and metrics["segm_AP"] == 1.0, tables
