"""Jitted batch inference over a COCO-format split, host post-processing
in worker processes overlapped with the devices, COCO metrics.

The devices run batch i + 1 while the host fetches batch i; pasting and
RLE encoding run in a process pool while later batches are predicted.
"""
import concurrent.futures
import json
import multiprocessing
import os
import time

import jax
import numpy as np

from scnet_jax.data.coco import CocoSource
from scnet_jax.data.loader import eval_iterator
from scnet_jax.evaluation.coco_eval import coco_metrics
from scnet_jax.evaluation.postprocess import batch_results
from scnet_jax.models import build_model
from scnet_jax.parallel import DataParallel

META_KEYS = ("scale", "orig_hw", "image_id", "valid")


def make_predict(model):
  def predict(variables, batch):
    return model.apply(variables, batch, method=model.predict)
  return predict


def evaluate(config, variables, *, ann_file, image_dir, output_dir,
             evaluator="faster_coco_eval", per_device_batch=1, workers=2,
             log=print):
  """Predicts every image of the split and scores it.

  Writes output_dir/results.json (COCO results) and
  output_dir/metrics.json ({'bbox_AP': ..., 'segm_AP': ..., timings}).
  Returns the metrics dict.
  """
  source = CocoSource(ann_file, image_dir, seg_dir="", train=False)
  model = build_model(config)
  model_keys = model.batch_keys(train=False)
  dp = DataParallel(config.parallel, make_predict(model), donate=False,
                    out_sharded=True)
  local_batch = per_device_batch * jax.local_device_count()
  batches, num_batches = eval_iterator(source, config, local_batch)
  dvars = dp.put_replicated(variables)
  cat_ids = np.asarray(source.cat_ids)
  mask_thr = config.model.test.mask_thr
  log(f"Evaluating {len(source)} images of {ann_file} in {num_batches} "
      f"batches of {local_batch}")

  ctx = multiprocessing.get_context("spawn")
  pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) \
      if workers > 0 else None
  futures, results = [], []
  timing = dict(compile_s=0.0, network_s=0.0, network_images=0)
  post_start = None

  def submit(dets, metas):
    args = (dets, metas, cat_ids, mask_thr)
    if pool is None:
      results.extend(batch_results(args))
    else:
      futures.append(pool.submit(batch_results, args))

  pending = None
  skipped = set()
  t_loop = time.perf_counter()
  for i, batch in enumerate(batches):
    for image_id in batch["image_id"][batch["error"]]:
      if int(image_id) not in skipped:
        skipped.add(int(image_id))
        log(f"warning: image id {int(image_id)} of {ann_file} could not be "
            f"read; skipped")
    t0 = time.perf_counter()
    out = dp(dvars, dp.put_batch({k: batch[k] for k in model_keys}))
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
    if (i + 1) % 20 == 0 or i + 1 == num_batches:
      log(f"  predicted {i + 1}/{num_batches} batches")
  if pending is not None:
    submit(*pending)
  post_start = time.perf_counter()
  for f in futures:
    results.extend(f.result())
  if pool is not None:
    pool.shutdown()
  timing["postprocess_wait_s"] = time.perf_counter() - post_start
  timing["loop_s"] = time.perf_counter() - t_loop

  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "results.json"), "w") as f:
    json.dump(results, f)
  if skipped:
    log(f"warning: {len(skipped)} unreadable images skipped and left out "
        f"of the metrics")
  t0 = time.perf_counter()
  metrics, tables = coco_metrics(ann_file, results, evaluator,
                                 image_ids=[r["image_id"] for r in
                                            source.records
                                            if r["image_id"] not in skipped],
                                 log=log)
  timing["metrics_s"] = time.perf_counter() - t0
  log(tables)
  ips = timing["network_images"] / max(timing["network_s"], 1e-9)
  log(f"compile: {timing['compile_s']:.1f} s (first batch)")
  log(f"network: {ips:.2f} images/s after compilation")
  log(f"post-processing: {timing['postprocess_wait_s']:.2f} s after the "
      f"last batch (overlapped with the network before it)")
  log(f"metrics ({evaluator}): {timing['metrics_s']:.2f} s")
  out = dict(metrics, num_images=len(source) - len(skipped),
             skipped_images=len(skipped), evaluator=evaluator,
             network_images_per_s=ips, **timing)
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
  return out
