"""Deterministic, resumable, multi-host loaders on Grain.

Training order: each epoch shuffles the images of every bucket (seeded by
seed and epoch), cuts them into global batches of one bucket each, and
shuffles the batches. Host p of P reads rows [p * B / P, (p + 1) * B / P)
of every global batch, so hosts never read the same image. Flips, and the
training scale when data.train_scales holds several (mmdet's
RandomChoiceResize), are drawn from (seed, epoch, step, row). The sample at position i is a pure function
of i, so a run resumed at step s reads exactly what it would have read
(`train_iterator(..., start_step=s)`), with or without worker processes.

A training image that cannot be read is replaced by the next readable
record of its bucket (in record order) and reported in the batch
(`skipped`: the record index, -1 for none); evaluation counts it and
leaves it out of the metrics.
"""
import dataclasses
import functools
import os

import grain
import numpy as np

from scnet_jax.data import transforms
from scnet_jax.data.resize import check_rule
from scnet_jax.errors import DataError


def record_buckets(source, data_cfg):
  """Bucket index of every record, from the annotation sizes alone."""
  buckets = transforms.check_buckets(data_cfg.buckets)
  check_rule(data_cfg.resize)
  out = []
  for rec in source.records:
    hw, _ = transforms.rescale_size(rec["height"], rec["width"],
                                    data_cfg.image_scale)
    out.append(transforms.choose_bucket(hw, buckets))
  return np.asarray(out, np.int64), buckets


def steps_per_epoch(bucket_of, global_batch):
  """Full global batches per epoch (each batch holds one bucket)."""
  return int(sum(np.sum(bucket_of == b) // global_batch
                 for b in np.unique(bucket_of)))


def check_steps_per_epoch(source, bucket_of, global_batch):
  """steps_per_epoch, or DataError naming the annotation file when the
  training images fill no global batch of one bucket."""
  spe = steps_per_epoch(bucket_of, global_batch)
  if spe == 0:
    per_bucket = np.bincount(bucket_of) if len(bucket_of) else [0]
    raise DataError(
        f"{source.ann_file}: {len(bucket_of)} training images (after "
        f"mmdetection's filters) give no full global batch of "
        f"{global_batch} images of one bucket (at most "
        f"{int(np.max(per_bucket))} share a bucket): add images or lower "
        f"--config.global_batch")
  return spe


class TrainPlan:
  """Sequence of (record index, bucket index, flip, scale index) for one
  host; the scale indexes data.train_scales (0 when it is empty)."""

  def __init__(self, bucket_of, global_batch, seed, flip_prob, num_steps,
               process_index=0, process_count=1, num_scales=1):
    if global_batch % process_count:
      raise ValueError(f"global_batch {global_batch} is not divisible by "
                       f"the {process_count} processes")
    self.bucket_of = bucket_of
    self.global_batch = global_batch
    self.per_host = global_batch // process_count
    self.offset = process_index * self.per_host
    self.seed = seed
    self.flip_prob = flip_prob
    self.num_steps = num_steps
    self.num_scales = max(int(num_scales), 1)
    self.steps_per_epoch = steps_per_epoch(bucket_of, global_batch)
    if self.steps_per_epoch == 0:
      raise DataError(f"{len(bucket_of)} training images give no full "
                      f"global batch of {global_batch}")

  @functools.lru_cache(maxsize=2)
  def _epoch(self, epoch):
    rng = np.random.default_rng([self.seed, epoch])
    batches = []
    for b in np.unique(self.bucket_of):
      idx = rng.permutation(np.nonzero(self.bucket_of == b)[0])
      n = len(idx) // self.global_batch * self.global_batch
      batches.extend(idx[:n].reshape(-1, self.global_batch))
    return np.stack(batches)[rng.permutation(len(batches))]

  def __len__(self):
    return self.num_steps * self.per_host

  def __getitem__(self, i):
    step, row = divmod(int(i), self.per_host)
    epoch, in_epoch = divmod(step, self.steps_per_epoch)
    rec = int(self._epoch(epoch)[in_epoch, self.offset + row])
    rng = np.random.default_rng([self.seed, epoch, in_epoch,
                                 self.offset + row])
    flip = rng.random() < self.flip_prob
    scale = int(rng.integers(self.num_scales)) if self.num_scales > 1 else 0
    return rec, int(self.bucket_of[rec]), bool(flip), scale


class EvalPlan:
  """Every record once, grouped into batches of one bucket; the last
  batch of a bucket is padded by repeating its last image (valid=False)."""

  def __init__(self, bucket_of, batch, process_index=0, process_count=1):
    items = []
    for b in np.unique(bucket_of):
      idx = np.nonzero(bucket_of == b)[0]
      pad = (-len(idx)) % batch
      valid = np.r_[np.ones(len(idx), bool), np.zeros(pad, bool)]
      idx = np.r_[idx, np.full(pad, idx[-1])]
      items.extend(zip(idx.tolist(), [int(b)] * len(idx), valid.tolist()))
    batches = [items[i:i + batch] for i in range(0, len(items), batch)]
    self.items = [x for k, bt in enumerate(batches)
                  if k % process_count == process_index for x in bt]
    self.num_images = int(len(bucket_of))

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    return self.items[i]


_NO_GROUND_TRUTH = dict(boxes=np.zeros((0, 4), np.float32),
                        labels=np.zeros((0,), np.int32), segmentations=[],
                        ann_ids=[])


@dataclasses.dataclass
class LoadExample:
  """Grain map function: plan item -> transformed example.

  bucket_of: every record's bucket (training: where a replacement for an
  unreadable image is looked for). with_semantic, with_masks: the model
  reads gt_semantic, gt_masks (decoded only then).
  """
  source: object
  data_cfg: object
  buckets: list
  num_classes: int
  with_semantic: bool
  train: bool
  bucket_of: object = None
  with_masks: bool = False

  def _prepare(self, rec, bucket, flip, scale=0):
    record = self.source[rec]
    if not self.train:  # evaluation reads the image alone
      record = dict(record, **_NO_GROUND_TRUTH)
    image_scale = (self.data_cfg.train_scales[scale]
                   if self.train and self.data_cfg.get("train_scales")
                   else self.data_cfg.image_scale)
    return transforms.prepare_example(
        self.source, record, self.data_cfg, self.num_classes,
        self.buckets[bucket], flip, self.with_semantic, image_scale,
        self.with_masks)

  def _readable(self, rec, bucket, flip, scale):
    try:
      return self._prepare(rec, bucket, flip, scale)
    except DataError:
      return None

  def __call__(self, item):
    if self.train:
      rec, bucket, flip, scale = item
      ex, skipped = self._readable(rec, bucket, flip, scale), -1
      if ex is None:
        skipped = rec
        same = np.nonzero(self.bucket_of == bucket)[0]
        start = int(np.searchsorted(same, rec))
        for k in range(1, len(same)):
          ex = self._readable(int(same[(start + k) % len(same)]), bucket,
                              flip, scale)
          if ex is not None:
            break
      if ex is None:
        raise DataError(f"no image of bucket {self.buckets[bucket]} could "
                        f"be read (first: {self.source[rec].get('path')})")
      ex["skipped"] = np.int32(skipped)
      ex["valid"] = np.bool_(True)
      return ex
    rec, bucket, valid = item
    try:
      ex = self._prepare(rec, bucket, False)
      ex["error"] = np.bool_(False)
    except DataError:
      # Evaluation reports, skips and counts an unreadable image.
      ex = transforms.empty_example(self.data_cfg, self.buckets[bucket],
                                    self.with_semantic,
                                    self.source[rec]["image_id"])
      ex["error"] = np.bool_(True)
      valid = False
    ex["valid"] = np.bool_(valid)
    return ex


def read_error(source, index):
  """Why record `index` cannot be trained on (the DataError's line), or
  None: the reason behind a `skipped` entry of a batch, which crosses
  worker processes as a bare index."""
  try:
    transforms.load_checked_image(source, source[index])
  except DataError as e:
    return str(e)
  return None


def resolve_num_workers(num_workers, local_devices):
  """data.num_workers, with -1 (auto) = two Grain worker processes per
  local device, leaving two cores to the devices' host threads (none on a
  machine of 4 cores or fewer, where they would only compete with XLA)."""
  if num_workers >= 0:
    return int(num_workers)
  return max(0, min(2 * local_devices, (os.cpu_count() or 1) - 2)) \
      if (os.cpu_count() or 1) > 4 else 0


def _iterate(plan, load, batch, num_workers, start=0):
  ds = grain.MapDataset.source(plan)
  if start:
    ds = ds[start:]
  ds = ds.map(load).batch(batch, drop_remainder=False).to_iter_dataset()
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)


def train_iterator(source, config, num_steps, process_index=0,
                   process_count=1, start_step=0, local_devices=1):
  """Iterator of host-local batches (dicts of [global_batch / P, ...]
  numpy arrays) of steps start_step..num_steps - 1; data.num_workers = -1
  picks the worker count from `local_devices` (resolve_num_workers).
  Semantic maps are decoded only when the model reads them."""
  # Imported here: Grain's worker processes unpickle this module's
  # LoadExample and need no model code.
  from scnet_jax.models import batch_keys
  from scnet_jax.models.structures import MASKS_KEY, SEMANTIC_KEY
  keys = batch_keys(config, train=True)
  with_semantic, with_masks = SEMANTIC_KEY in keys, MASKS_KEY in keys
  bucket_of, buckets = record_buckets(source, config.data)
  scales = transforms.check_train_scales(config.data)
  plan = TrainPlan(bucket_of, config.global_batch, config.seed,
                   config.data.flip_prob, num_steps, process_index,
                   process_count, num_scales=len(scales))
  load = LoadExample(source, config.data, buckets, config.model.num_classes,
                     with_semantic, True, bucket_of, with_masks)
  workers = resolve_num_workers(config.data.num_workers, local_devices)
  it = _iterate(plan, load, plan.per_host, workers,
                start=start_step * plan.per_host)
  return it, plan


def eval_iterator(source, config, batch, process_index=0, process_count=1,
                  local_devices=1):
  """Iterator of this process's evaluation batches (every image once over
  all processes; padded batches carry valid=False rows; no ground truth
  decoded). Returns (iterator, number of batches)."""
  bucket_of, buckets = record_buckets(source, config.data)
  plan = EvalPlan(bucket_of, batch, process_index, process_count)
  load = LoadExample(source, config.data, buckets, config.model.num_classes,
                     False, False)
  workers = resolve_num_workers(config.data.num_workers, local_devices)
  return _iterate(plan, load, batch, workers), len(plan) // batch
