"""Evaluate a checkpoint on a COCO-format split.

  python eval.py --config configs/scnet_tiny_shapes.py --checkpoint runs/tiny
  python eval.py --config configs/scnet_r50_fpn_1x_coco.py --checkpoint DIR \
      --config.data.val.ann_file=... --config.data.val.image_dir=... \
      --output runs/eval --evaluator pycocotools --visualize 8

Prints the COCO bbox and segm tables, writes OUTPUT/results.json and
OUTPUT/metrics.json (and OUTPUT/vis/*.png with --visualize). Started as
several processes (docs/distributed.md) they split the images and process 0
writes the files.
"""
from scnet_jax.commands import evaluate

if __name__ == "__main__":
  evaluate()
