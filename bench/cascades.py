"""Inference of SCNet, HTC and Cascade Mask R-CNN, R-50-FPN, all with the
semantic branch as in the paper's comparison, one 800x1216 image (random
weights; static shapes make the work independent of the weights). The
paper reports SCNet 38% faster than Cascade Mask R-CNN; the last line is
Cascade time / SCNet time.

  python bench/cascades.py
"""
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import machine, time_jax  # noqa: E402
from bench.models import H, W, photo  # noqa: E402
from scnet_jax import config_lib  # noqa: E402
from scnet_jax.models import build_model  # noqa: E402
from scnet_jax.training.state import init_variables  # noqa: E402


def main():
  data = {"image": photo(1), "image_hw": np.array([[H, W]], np.int32)}
  times = {}
  for family in ("cascade_mask_rcnn", "htc", "scnet"):
    c = config_lib.get_base(family)
    c.model.roi_heads.semantic = True
    c.model.test.score_thr = 0.001
    c.data.buckets = ((H, W),)
    c.data.max_instances = 8
    model = build_model(c)
    params, stats = init_variables(model, c, 0)
    fn = jax.jit(lambda v, b, m=model: m.apply(v, b, method=m.predict))
    first, t = time_jax(fn, {"params": params, "batch_stats": stats}, data,
                        repeats=3)
    times[family] = t
    print(f"{family:<20} compile {first - t:6.1f} s   inference "
          f"{t * 1e3:8.1f} ms")
  print(f"machine: {machine()}")
  print(f"SCNet vs HTC: {times['htc'] / times['scnet']:.3f}x")
  print(f"ratio: {times['cascade_mask_rcnn'] / times['scnet']:.3f}")


if __name__ == "__main__":
  main()
