"""Where a config's data comes from: COCO-format files ('coco'), the
embedded shapes dataset ('shapes', generated on first use; empty paths
point into it) or a prepared TFDS dataset ('tfds', training split; the
metrics still read data.val.ann_file)."""
from scnet_jax.data import shapes
from scnet_jax.data.coco import CocoSource
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
  if config.data.source == "tfds":
    from scnet_jax.data.tfds_builder import TfdsSource
    return TfdsSource(config.data.tfds_dir, "train", train=True)
  ensure_shapes(config, log)
  ann_file, image_dir, seg_dir = split_paths(config, "train")
  reads_semantic = SEMANTIC_KEY in batch_keys(config, train=True)
  src = CocoSource(ann_file, image_dir, seg_dir if reads_semantic else "",
                   train=True)
  for line in src.warning_lines():
    log(line)
  return src


def val_paths(config):
  ensure_shapes(config)
  return split_paths(config, "val")[:2]
