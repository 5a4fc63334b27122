r"""A TFDS builder for COCO-format instance segmentation, and a source that
reads it back.

TFDS's own `coco/2017` has no instance masks. This builder stores, per
image: the encoded image file, id, size, file name, boxes (x1, y1, x2, y2),
category ids, crowd flags, compressed-RLE masks and, optionally, the
encoded stuff map. It needs no TensorFlow (array_record files, bytes
features), so data is prepared once and read on TPU hosts with
`tfds.data_source`:

  python -m scnet_jax.data.tfds_builder --ann_file A.json --image_dir IMG \
      --data_dir ~/tensorflow_datasets --split train

and train with --config.data.source=tfds --config.data.tfds_dir=DIR.
"""
import io
import json
import os

import numpy as np
from PIL import Image

from scnet_jax.data.coco import ann_to_rle
from scnet_jax.data.coco_json import instance_segmentation, load_coco_json
from scnet_jax.errors import DataError

NAME = "coco_instances"


def _builder_class():
  import tensorflow_datasets as tfds

  class CocoInstances(tfds.core.GeneratorBasedBuilder):
    """COCO-format instance segmentation (images, boxes, RLE masks)."""
    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, sources=None, **kwargs):
      self._sources = sources or {}
      super().__init__(**kwargs)

    def _info(self):
      f = tfds.features
      return tfds.core.DatasetInfo(
          builder=self,
          description=__doc__.splitlines()[0],
          features=f.FeaturesDict({
              "image": f.Tensor(shape=(), dtype=np.object_),
              "image_id": f.Tensor(shape=(), dtype=np.int64),
              "height": f.Tensor(shape=(), dtype=np.int64),
              "width": f.Tensor(shape=(), dtype=np.int64),
              "file_name": f.Text(),
              "boxes": f.Tensor(shape=(None, 4), dtype=np.float32),
              "category_ids": f.Tensor(shape=(None,), dtype=np.int64),
              "ann_ids": f.Tensor(shape=(None,), dtype=np.int64),
              "is_crowd": f.Tensor(shape=(None,), dtype=np.bool_),
              "rle_counts": f.Sequence(f.Text()),
              "stuff_map": f.Tensor(shape=(), dtype=np.object_),
              "categories": f.Text(),
          }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(*paths)
              for split, paths in self._sources.items()}

    def _generate_examples(self, ann_file, image_dir, seg_dir):
      images, annotations, categories = load_coco_json(ann_file)
      cats = json.dumps(categories)
      per_image = {}
      for ann in annotations:
        segm, _ = instance_segmentation(ann)
        if segm is not None:  # as CocoSource, which counts the others
          per_image.setdefault(ann["image_id"], []).append(
              dict(ann, segmentation=segm))
      for im in images.values():
        anns = per_image.get(im["id"], [])
        path = os.path.join(image_dir, im["file_name"])
        if not os.path.exists(path):
          raise DataError(f"{path}: image file not found (image id "
                          f"{im['id']} of {ann_file})")
        with open(path, "rb") as fh:
          image = fh.read()
        stuff = b""
        if seg_dir:
          stem = os.path.splitext(im["file_name"])[0]
          with open(os.path.join(seg_dir, stem + ".png"), "rb") as fh:
            stuff = fh.read()
        rles = [ann_to_rle(a["segmentation"], im["height"], im["width"],
                           f"{ann_file}: annotation id {a['id']}")
                for a in anns]
        yield im["id"], {
            "image": image, "image_id": im["id"], "height": im["height"],
            "width": im["width"], "file_name": im["file_name"],
            "boxes": np.asarray([[a["bbox"][0], a["bbox"][1],
                                  a["bbox"][0] + a["bbox"][2],
                                  a["bbox"][1] + a["bbox"][3]]
                                 for a in anns], np.float32).reshape(-1, 4),
            "category_ids": np.asarray([a["category_id"] for a in anns],
                                       np.int64),
            "ann_ids": np.asarray([a["id"] for a in anns], np.int64),
            "is_crowd": np.asarray([bool(a.get("iscrowd", 0)) for a in anns],
                                   np.bool_),
            "rle_counts": [r["counts"].decode("ascii")
                           if isinstance(r["counts"], bytes) else r["counts"]
                           for r in rles],
            "stuff_map": stuff, "categories": cats}

  return CocoInstances


def build(data_dir, splits):
  """Prepares the dataset under data_dir.

  splits: {split name: (ann_file, image_dir, seg_dir or '')}.
  """
  builder = _builder_class()(sources=splits, data_dir=data_dir,
                             file_format="array_record")
  builder.download_and_prepare()
  return builder


class TfdsSource:
  """The CocoSource interface over a prepared TFDS split (random access via
  tfds.data_source), so the transforms and loaders work unchanged."""

  def __init__(self, data_dir, split, train=True):
    import tensorflow_datasets as tfds
    self.ds = tfds.data_source(NAME, data_dir=data_dir, split=split,
                               builder_kwargs={"file_format":
                                               "array_record"})
    self.ann_file = f"{data_dir}/{NAME}[{split}]"
    first = self.ds[0]
    cats = json.loads(_text(first["categories"]))
    self.cat_ids = [c["id"] for c in cats]
    self.class_names = [c["name"] for c in cats]
    self.cat_to_label = {c: i for i, c in enumerate(self.cat_ids)}
    self.warnings = {}
    self.records = []
    for i in range(len(self.ds)):
      ex = self.ds[i]
      keep = ~ex["is_crowd"]
      boxes = ex["boxes"][keep]
      ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
      labels = np.asarray([self.cat_to_label[c] for c in
                           ex["category_ids"][keep][ok]], np.int32)
      h, w = int(ex["height"]), int(ex["width"])
      if train and (not len(labels) or min(h, w) < 32):
        continue
      counts = [c for c, k in zip(ex["rle_counts"], keep) if k]
      self.records.append(dict(
          index=i, image_id=int(ex["image_id"]),
          path=f"{self.ann_file}/{_text(ex['file_name'])}", height=h,
          width=w, boxes=boxes[ok], labels=labels,
          segmentations=[{"size": [h, w], "counts": _text(c)}
                         for c, o in zip(counts, ok) if o],
          ann_ids=[int(a) for a, o in zip(ex["ann_ids"][keep], ok) if o],
          seg_path=None, has_stuff=len(ex["stuff_map"]) > 0))

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]

  def _decode(self, data, rec, what):
    try:
      with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB") if what == "image" else im)
    except OSError as e:
      raise DataError(f"{rec['path']}: cannot decode {what} ({e})") from None

  def load_image(self, rec):
    return self._decode(self.ds[rec["index"]]["image"], rec, "image")

  def load_masks(self, rec):
    from pycocotools import mask as mask_utils
    h, w = rec["height"], rec["width"]
    if not rec["segmentations"]:
      return np.zeros((0, h, w), np.uint8)
    return np.stack([mask_utils.decode(
        {"size": s["size"], "counts": s["counts"].encode("ascii")})
                     for s in rec["segmentations"]])

  def load_semantic(self, rec):
    if not rec["has_stuff"]:
      return None
    return self._decode(self.ds[rec["index"]]["stuff_map"], rec, "stuff map")

  def label_to_cat_id(self, labels):
    return np.asarray(self.cat_ids)[np.asarray(labels)]


def _text(x):
  return x.decode() if isinstance(x, bytes) else str(x)


def main():
  import argparse
  p = argparse.ArgumentParser(description="Prepare a COCO-format split as "
                              "a TFDS dataset (array_record).")
  p.add_argument("--ann_file", required=True)
  p.add_argument("--image_dir", required=True)
  p.add_argument("--seg_dir", default="")
  p.add_argument("--split", default="train")
  p.add_argument("--data_dir", required=True)
  a = p.parse_args()
  try:
    build(a.data_dir, {a.split: (a.ann_file, a.image_dir, a.seg_dir)})
  except DataError as e:
    raise SystemExit(f"error: {e}")
  print(f"prepared {NAME}[{a.split}] in {a.data_dir}")


if __name__ == "__main__":
  main()
