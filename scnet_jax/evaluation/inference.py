"""Jitted batch inference over a COCO-format split, host post-processing
in worker processes overlapped with the devices, COCO metrics.

The devices run batch i + 1 while the host fetches batch i; pasting and
RLE encoding run in a process pool while later batches are predicted.
Several processes split the batches and gather the results.
"""
import concurrent.futures
import json
import multiprocessing
import os
import time

import jax
import numpy as np

from scnet_jax import progress
from scnet_jax.data.coco import CocoSource
from scnet_jax.data.loader import eval_iterator, read_error, record_buckets
from scnet_jax.evaluation.coco_eval import coco_metrics
from scnet_jax.evaluation.postprocess import batch_results
from scnet_jax.models import build_model
from scnet_jax.parallel import DataParallel, gather_json
from scnet_jax.models import batch_keys, dummy_batch

META_KEYS = ("scale", "orig_hw", "image_id", "valid")


def make_predict(model):
  def predict(variables, batch):
    return model.apply(variables, batch, method=model.predict)
  return predict


class Evaluator:
  """Predicts every image of a split and scores it; compiled once, called
  with new variables (evaluation during training).

  On several processes each predicts its share of the batches on its own
  devices (no collectives), post-processes them, and the COCO results of
  all processes are gathered on every process; process 0 computes the
  metrics and writes the files, and every process returns the same
  metrics.
  """

  def __init__(self, config, *, ann_file, image_dir, evaluator=
               "faster_coco_eval", per_device_batch=1, workers=2, log=print):
    self.config = config
    self.ann_file = ann_file
    self.evaluator = evaluator
    self.workers = workers
    self.source = CocoSource(ann_file, image_dir, seg_dir="", train=False)
    model = build_model(config)
    self.model_keys = batch_keys(config, train=False)
    self.dp = DataParallel(config.parallel, make_predict(model),
                           donate=False, out_sharded=True,
                           devices=jax.local_devices())
    self.local_batch = per_device_batch * jax.local_device_count()
    self.cat_ids = np.asarray(self.source.cat_ids)
    self.index_of = {r["image_id"]: i for i, r in
                     enumerate(self.source.records)}
    self.progress = progress.enabled(config)
    self.log = progress.logger(log, self.progress)

  def compile(self, variables):
    """Compiles the prediction program for every bucket of the split
    without running it; the evaluations then start at once. train.py
    calls this in a thread while the training step compiles.

    variables: {'params', 'batch_stats'}: arrays or ShapeDtypeStructs,
    only their shapes and dtypes are read (zeros stand in for them, so
    that this can run in a thread beside a train step that donates the
    state's buffers).
    """
    dvars = self.dp.put_replicated(jax.tree.map(
        lambda x: np.zeros(x.shape, x.dtype), variables))
    bucket_of, buckets = record_buckets(self.source, self.config.data)
    for b in np.unique(bucket_of):
      batch = dummy_batch(self.config, self.local_batch, tuple(buckets[b]),
                          train=False)
      self.dp.compile(dvars, self.dp.put_batch(batch))

  def __call__(self, variables, output_dir, desc="eval"):
    """Writes output_dir/results.json (COCO results) and
    output_dir/metrics.json ({'bbox_AP': ..., 'segm_AP': ..., timings});
    returns the metrics dict. variables: {'params', 'batch_stats'}, host
    trees or replicated device arrays (DataParallel.replicated_view of
    the training state, read in place)."""
    log, source, dp = self.log, self.source, self.dp
    batches, num_batches = eval_iterator(
        source, self.config, self.local_batch, jax.process_index(),
        jax.process_count(), jax.local_device_count())
    dvars = dp.put_replicated(variables)
    mask_thr = self.config.model.test.mask_thr
    log(f"Evaluating {len(source)} images of {self.ann_file} in "
        f"{num_batches} batches of {self.local_batch}"
        + (f" on each of {jax.process_count()} processes"
           if jax.process_count() > 1 else ""))
    ctx = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(
        self.workers, mp_context=ctx) if self.workers > 0 else None
    futures, results = [], []
    timing = dict(compile_s=0.0, network_s=0.0, network_images=0)

    def submit(dets, metas):
      args = (dets, metas, self.cat_ids, mask_thr)
      if pool is None:
        results.extend(batch_results(args))
      else:
        futures.append(pool.submit(batch_results, args))

    pending = None
    skipped = set()
    bar = progress.bar(len(source), desc, "img", self.progress)
    t_loop = time.perf_counter()
    for i, batch in enumerate(batches):
      for image_id in batch["image_id"][batch["error"]]:
        if int(image_id) not in skipped:
          skipped.add(int(image_id))
          why = read_error(source, self.index_of[int(image_id)])
          log(f"warning: image id {int(image_id)} of {self.ann_file} "
              f"skipped: {why or 'could not be read'}")
      t0 = time.perf_counter()
      out = dp(dvars, dp.put_batch({k: batch[k] for k in self.model_keys}))
      metas = {k: batch[k] for k in META_KEYS}
      if pending is not None:
        submit(*pending)
      dets = dp.get_sharded(out)  # waits for the devices
      dt = time.perf_counter() - t0
      if i == 0:
        timing["compile_s"] = dt
      else:
        timing["network_s"] += dt
        timing["network_images"] += int(np.sum(metas["valid"]))
      pending = (dets, metas)
      # Every process's share, as the bar counts the whole split.
      bar.update(int(np.sum(metas["valid"]) + np.sum(batch["error"]))
                 * jax.process_count())
    if pending is not None:
      submit(*pending)
    bar.close()
    post_start = time.perf_counter()
    for f in futures:
      results.extend(f.result())
    if pool is not None:
      pool.shutdown()
    timing["postprocess_wait_s"] = time.perf_counter() - post_start
    timing["loop_s"] = time.perf_counter() - t_loop
    if jax.process_count() > 1:
      every = gather_json({"results": results, "skipped": sorted(skipped)})
      results = [r for part in every for r in part["results"]]
      skipped = {i for part in every for i in part["skipped"]}
    metrics = None
    if jax.process_index() == 0:
      metrics = self._score(results, skipped, timing, output_dir)
    if jax.process_count() > 1:
      metrics = gather_json(metrics)[0]
    return metrics

  def _score(self, results, skipped, timing, output_dir):
    log, source, evaluator = self.log, self.source, self.evaluator
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
      json.dump(results, f)
    if skipped:
      log(f"warning: {len(skipped)} unreadable images skipped and left out "
          f"of the metrics")
    t0 = time.perf_counter()
    metrics, tables = coco_metrics(
        self.ann_file, results, evaluator,
        image_ids=[r["image_id"] for r in source.records
                   if r["image_id"] not in skipped], log=log)
    timing["metrics_s"] = time.perf_counter() - t0
    log(tables)
    ips = timing["network_images"] / max(timing["network_s"], 1e-9)
    log(f"compile: {timing['compile_s']:.1f} s (first batch)")
    log(f"network: {ips:.2f} images/s after compilation"
        + (" (process 0)" if jax.process_count() > 1 else ""))
    log(f"post-processing: {timing['postprocess_wait_s']:.2f} s after the "
        f"last batch (overlapped with the network before it)")
    log(f"metrics ({evaluator}): {timing['metrics_s']:.2f} s")
    out = dict(metrics, num_images=len(source) - len(skipped),
               skipped_images=len(skipped), evaluator=evaluator,
               network_images_per_s=ips, **timing)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
      json.dump(out, f, indent=1, sort_keys=True)
    return out
