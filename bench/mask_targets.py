"""What mmdetection's exact mask targets cost at COCO size:
`model.roi_heads.mask_targets="full"` (full-resolution masks in the batch,
ops.full_mask_targets) against the default "crop" (112 x 112 box crops,
ops.mask_targets), for one image of a global batch in the 800 x 1344
bucket with data.max_instances = 100 slots and 20 instances.

Printed per image: the host's bytes of mask ground truth, the host time
to build it from the decoded masks of a 480 x 640 photograph resized to
800 x 1067 (the loader's work), the time to copy it to the device, and
the device's target computation for 128 positive RoIs (compilation on
its own line). Last line: full / crop of host + copy + device time, the
per-image cost of exactness in the input pipeline and the step.

  python bench/mask_targets.py
"""
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import machine, time_call, time_jax  # noqa: E402
from scnet_jax import ops  # noqa: E402
from scnet_jax.data.resize import resize_labels  # noqa: E402

G, INSTANCES, POSITIVES, CROP = 100, 20, 128, 112
SOURCE, RESIZED, BUCKET = (480, 640), (800, 1067), (800, 1344)


def instances(rng):
  """[N, 480, 640] uint8 ellipse masks and their boxes (source pixels)."""
  yy, xx = np.mgrid[:SOURCE[0], :SOURCE[1]]
  masks, boxes = [], []
  for _ in range(INSTANCES):
    ry, rx = rng.uniform(10, 150, 2)
    cy, cx = rng.uniform(0, SOURCE[0]), rng.uniform(0, SOURCE[1])
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    ys, xs = np.nonzero(m)
    masks.append(m.astype(np.uint8))
    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
  return np.stack(masks), np.array(boxes, np.float32)


def host_crops(masks, boxes):
  crops = np.zeros((G, CROP, CROP), np.uint8)
  windows = np.zeros((G, 4), np.float32)
  s = RESIZED[1] / SOURCE[1], RESIZED[0] / SOURCE[0]
  for i, (m, b) in enumerate(zip(masks, boxes)):
    crops[i], win = ops.crop_instance_mask(m, b, CROP)
    windows[i] = win * np.array([*s, *s], np.float32)
  return crops, windows


def host_full(masks):
  full = np.zeros((G, *BUCKET), np.uint8)
  for i, m in enumerate(masks):
    full[i, :RESIZED[0], :RESIZED[1]] = resize_labels(m, RESIZED, "cv2")
  return full


def positive_rois(rng, boxes):
  """[K, 4] RoIs jittered around the resized boxes, [K] their gt."""
  s = np.array([RESIZED[1] / SOURCE[1], RESIZED[0] / SOURCE[0]] * 2)
  gt = rng.integers(0, INSTANCES, POSITIVES).astype(np.int32)
  b = boxes[gt] * s
  size = np.concatenate([b[:, 2:] - b[:, :2]] * 2, axis=1)
  rois = b + rng.normal(0, 0.1, b.shape) * size
  return np.clip(rois, 0, [RESIZED[1], RESIZED[0]] * 2).astype(
      np.float32), gt


def device_copy(*arrays):
  t0 = time.perf_counter()
  jax.block_until_ready(jax.device_put(arrays))
  return time.perf_counter() - t0


def main():
  rng = np.random.default_rng(0)
  masks, boxes = instances(rng)
  rois, gt = positive_rois(rng, boxes)
  print(machine())
  crops, windows = host_crops(masks, boxes)
  full = host_full(masks)
  canvas = np.array([-(-RESIZED[0] // 32) * 32, -(-RESIZED[1] // 32) * 32],
                    np.int32)
  crop_fn = jax.jit(lambda c, w, r, g: ops.mask_targets(c, w, r, g))
  full_fn = jax.jit(lambda m, hw, r, g: ops.full_mask_targets(m, hw, r, g))
  rows = {}
  for name, host, args, fn in (
      ("crop", lambda: host_crops(masks, boxes), (crops, windows), crop_fn),
      ("full", lambda: host_full(masks), (full, canvas), full_fn)):
    on_device = jax.device_put((*args, rois, gt))
    compile_s, step_s = time_jax(fn, *on_device, repeats=5)
    host_s = time_call(host, repeats=5)
    copy_s = float(np.median([device_copy(*args) for _ in range(5)]))
    nbytes = sum(a.nbytes for a in args)
    rows[name] = host_s + copy_s + step_s
    print(f"{name}: {nbytes / 2**20:.1f} MiB per image; host {host_s * 1e3:.1f}"
          f" ms, copy {copy_s * 1e3:.1f} ms, device {step_s * 1e3:.1f} ms "
          f"({POSITIVES} RoIs); compile + first call {compile_s:.1f} s")
  agree = np.mean(np.asarray(crop_fn(crops, windows, rois, gt)) ==
                  np.asarray(full_fn(full, canvas, rois, gt)))
  print(f"target pixels on which the rules agree: {agree:.2%}")
  print(f"ratio: {rows['full'] / rows['crop']:.2f}")


if __name__ == "__main__":
  main()
