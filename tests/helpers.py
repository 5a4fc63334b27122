"""Shared test fixtures: a tiny generated shapes dataset and real batches."""
import functools
import os
import tempfile

import numpy as np

from scnet_jax import config_lib
from scnet_jax.data import loader
from scnet_jax.data.coco import CocoSource
from scnet_jax.data.shapes import ensure_dataset

SHAPES_ROOT = os.path.join(tempfile.gettempdir(), "scnet_jax_test_shapes")
SPEC_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                        "spec")


@functools.lru_cache(maxsize=1)
def shapes_root():
  ensure_dataset(SHAPES_ROOT, num_train=48, num_val=16, size=128, seed=0,
                 log=lambda *a: None)
  return SHAPES_ROOT


def tiny_config(family="scnet", **overrides):
  c = config_lib.tiny_shapes(family)
  c.data.shapes.update(root=shapes_root(), num_train=48, num_val=16)
  c.global_batch = 2
  for k, v in overrides.items():
    target = c
    *path, last = k.split(".")
    for p in path:
      target = target[p]
    target[last] = v
  return c


def train_batches(config, num_steps, batch=None):
  src = CocoSource(f"{shapes_root()}/annotations/train.json",
                   f"{shapes_root()}/train")
  c = config.copy_and_resolve_references()
  if batch:
    c.global_batch = batch
  it, _ = loader.train_iterator(src, c, num_steps,
                                with_semantic=c.model.semantic)
  keys = ("image", "image_hw", "gt_boxes", "gt_labels", "gt_valid",
          "gt_mask_crops", "gt_mask_windows", "gt_semantic")
  return [{k: b[k] for k in keys if k in b} for b, _ in zip(it,
                                                           range(num_steps))]


def flat(tree):
  import flax
  return flax.traverse_util.flatten_dict(tree, sep="/")


def max_abs(tree):
  import jax
  return max(float(np.max(np.abs(np.asarray(x)))) for x in
             jax.tree.leaves(tree))
