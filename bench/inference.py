"""Inference of Mask R-CNN R-50-FPN: ours (jit) vs torchvision's
maskrcnn_resnet50_fpn, same weights, one 800x1216 photograph, batch 1 and 2.
The last line is torchvision time / our time at batch 1.

  python bench/inference.py
"""
import os
import sys

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import report, time_call, time_jax  # noqa: E402
from bench.models import H, W, ours_from, photo, torchvision_model  # noqa

def main():
  torch.set_num_threads(os.cpu_count())
  tv = torchvision_model().eval()
  _, model, variables = ours_from(tv)
  predict = jax.jit(lambda v, b: model.apply(v, b, method=model.predict))
  rows = []
  for batch in (1, 2):
    images = photo(batch)
    data = {"image": images, "image_hw": np.tile([[H, W]], (batch, 1)).astype(
        np.int32)}
    first, t_ours = time_jax(predict, variables, data, repeats=3)
    print(f"compile batch {batch}: {first - t_ours:.1f} s")
    tensors = [torch.tensor(im).permute(2, 0, 1).float() / 255 for im in
               images]
    with torch.no_grad():
      t_peer = time_call(lambda: tv(tensors), repeats=3)
    rows.append((f"mask r-cnn inference batch {batch}", t_peer, t_ours))
  report(rows, rows[0][1] / rows[0][2])


if __name__ == "__main__":
  main()
