"""The TFDS builder on the shapes dataset: what comes back equals the COCO
reader, record for record and mask for mask."""
import numpy as np

from scnet_jax.data.coco import CocoSource
from scnet_jax.data.tfds_builder import TfdsSource, build
from tests.helpers import shapes_root


def test_tfds_round_trip(tmp_path):
  root = shapes_root()
  ann, images = f"{root}/annotations/val.json", f"{root}/val"
  build(str(tmp_path), {"val": (ann, images, "")})
  tf_src = TfdsSource(str(tmp_path), "val", train=False)
  coco = CocoSource(ann, images, train=False)
  assert len(tf_src) == len(coco) == 16
  assert tf_src.class_names == coco.class_names
  by_id = {r["image_id"]: r for r in tf_src.records}
  for rec in coco.records:
    t = by_id[rec["image_id"]]
    np.testing.assert_allclose(t["boxes"], rec["boxes"])
    np.testing.assert_array_equal(t["labels"], rec["labels"])
    np.testing.assert_array_equal(tf_src.load_image(t), coco.load_image(rec))
    np.testing.assert_array_equal(tf_src.load_masks(t), coco.load_masks(rec))
