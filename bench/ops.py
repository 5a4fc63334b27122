"""RoIAlign and NMS: ours (jitted) vs torchvision.ops on the same inputs.

RoIAlign: 1000 RoIs, 256 channels, P2..P5 of an 800x1216 image, outputs
7x7 and 14x14 (sampling ratio 2, aligned). NMS: 2000 and 20000 boxes.
The last line is the geometric mean of torchvision time / our time.

  python bench/ops.py
"""
import os
import sys

import jax
import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import report, time_call, time_jax  # noqa: E402
from scnet_jax import ops  # noqa: E402


def main():
  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)
  h, w, c = 800, 1216, 256
  strides = (4, 8, 16, 32)
  feats = [rng.normal(size=(h // s, w // s, c)).astype(np.float32)
           for s in strides]
  xy = rng.uniform(0, [w - 50, h - 50], size=(1000, 2))
  wh = np.exp(rng.uniform(np.log(16), np.log(600), size=(1000, 2)))
  rois = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(
      np.float32)
  pooler_feats = {str(i): torch.tensor(f).permute(2, 0, 1)[None]
                  for i, f in enumerate(feats)}
  rows, compile_rows = [], []
  for size in (7, 14):
    ours = jax.jit(lambda fs, r, size=size: ops.multilevel_roi_align(
        fs, r, size, strides, 2, True))
    first, t_ours = time_jax(ours, feats, rois)
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], size, 2)
    # Same level rule (torchvision's), aligned=False there: compare cost.
    t_peer = time_call(lambda: pooler(pooler_feats, [torch.tensor(rois)],
                                      [(h, w)]))
    rows.append((f"roi_align {size}x{size} 1000 RoIs P2-P5", t_peer, t_ours))
    compile_rows.append((f"roi_align {size}", first - t_ours))
  for n in (2000, 20000):
    xy = rng.uniform(0, 1000, size=(n, 2))
    wh = rng.uniform(10, 120, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(size=n).astype(np.float32)
    ours = jax.jit(lambda b, s: ops.nms(b, s, 0.7, n))
    first, t_ours = time_jax(ours, boxes, scores)
    tb, ts = torch.tensor(boxes), torch.tensor(scores)
    t_peer = time_call(lambda: torchvision.ops.nms(tb, ts, 0.7))
    rows.append((f"nms {n} boxes", t_peer, t_ours))
    compile_rows.append((f"nms {n}", first - t_ours))
  for name, s in compile_rows:
    print(f"compile {name}: {s:.2f} s")
  ratio = float(np.exp(np.mean([np.log(p / o) for _, p, o in rows])))
  report(rows, ratio)


if __name__ == "__main__":
  main()
