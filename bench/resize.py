"""Host image resize per training/evaluation image: a 480x640 photograph
(skimage's astronaut, resized) to COCO's 800x1067, plus a label map of
that size, by data.resize's two rules. Ours: "cv2" (OpenCV, mmdetection's
rule, the default). Peer: "pil" (Pillow). Also prints the share of pixel
values on which the two rules differ. Last line: peer time / ours.

  python bench/resize.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import machine, time_call  # noqa: E402
from scnet_jax.data.resize import resize_image, resize_labels  # noqa: E402

SIZE, TARGET = (480, 640), (800, 1067)


def main():
  from skimage import data
  photo = resize_image(data.astronaut(), SIZE, "cv2")
  labels = np.random.default_rng(0).integers(0, 183, SIZE, dtype=np.uint8)
  print(machine())

  def run(rule):
    resize_image(photo, TARGET, rule)
    resize_labels(labels, TARGET, rule)

  pil = time_call(run, "pil", repeats=50, warmup=3)
  ours = time_call(run, "cv2", repeats=50, warmup=3)
  differ = np.mean(resize_image(photo, TARGET, "cv2") !=
                   resize_image(photo, TARGET, "pil"))
  print(f"pil: {pil * 1e3:.2f} ms per image")
  print(f"cv2: {ours * 1e3:.2f} ms per image")
  print(f"values that differ between the rules: {differ:.1%}")
  print(f"ratio: {pil / ours:.2f}")


if __name__ == "__main__":
  main()
