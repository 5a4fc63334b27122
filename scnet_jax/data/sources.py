"""Where a config's data comes from: COCO-format files ('coco'), the
embedded shapes dataset ('shapes', generated on first use; empty paths
point into it) or a prepared TFDS dataset ('tfds', training split; the
metrics still read data.val.ann_file)."""
from scnet_jax.data import shapes
from scnet_jax.data.coco import CocoSource
from scnet_jax.errors import DataError
from scnet_jax.models import batch_keys
from scnet_jax.models.structures import SEMANTIC_KEY


def split_paths(config, split):
  """(ann_file, image_dir, seg_dir) of 'train' or 'val'."""
  d = config.data
  s = d[split]
  if d.source == "shapes":
    root = d.shapes.root
    return (s.ann_file or f"{root}/annotations/{split}.json",
            s.image_dir or f"{root}/{split}", s.seg_dir)
  return s.ann_file, s.image_dir, s.seg_dir


def ensure_shapes(config, log=print):
  """Generates the shapes dataset if data.source == 'shapes'."""
  d = config.data
  if d.source == "shapes":
    s = d.shapes
    from scnet_jax.progress import enabled
    shapes.ensure_dataset(s.root, s.num_train, s.num_val, s.image_size,
                          s.max_objects, s.seed, log=log,
                          progress=enabled(config))


def train_source(config, log=print):
  """The training split's source, its labels checked against the heads
  (check_label_ranges)."""
  reads_semantic = SEMANTIC_KEY in batch_keys(config, train=True)
  if config.data.source == "tfds":
    from scnet_jax.data.tfds_builder import TfdsSource
    src = TfdsSource(config.data.tfds_dir, "train", train=True)
  else:
    ensure_shapes(config, log)
    ann_file, image_dir, seg_dir = split_paths(config, "train")
    src = CocoSource(ann_file, image_dir, seg_dir if reads_semantic else "",
                     train=True)
    for line in src.warning_lines():
      log(line)
  check_label_ranges(config.model, src, thing_semantic=reads_semantic and
                     not getattr(src, "seg_dir", ""))
  return src


def check_label_ranges(model, source, thing_semantic):
  """DataError, one line naming the file, the category and the head, when
  a label the source yields is outside a head's classes: the categories
  (labels 0.. in id order) beyond model.num_classes, or, for semantic
  labels derived from the instances (thing_semantic: no stuff maps), a
  semantic head without the classes 0..num_classes (num_classes is the
  background)."""
  n = model.num_classes
  if len(source.cat_ids) > n:
    raise DataError(
        f"{source.ann_file}: category id {source.cat_ids[n]} "
        f"({source.class_names[n]!r}) is label {n}, outside "
        f"model.num_classes={n} (the box, mask and classification heads "
        f"predict labels 0..{n - 1}); the file has "
        f"{len(source.cat_ids)} categories")
  if not thing_semantic:
    return
  for section in ("neck", "roi_heads"):
    head = model[section].get("semantic_head")
    if head and head.num_classes < n + 1:
      raise DataError(
          f"{source.ann_file}: thing-only semantic labels (no stuff maps) "
          f"run 0..{n} ({n}: background), outside model.{section}."
          f"semantic_head.num_classes={head.num_classes}")


def val_paths(config):
  ensure_shapes(config)
  return split_paths(config, "val")[:2]
