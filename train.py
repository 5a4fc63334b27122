"""Train a detector.

  python train.py --config configs/scnet_tiny_shapes.py --workdir runs/tiny
  python train.py --config configs/scnet_r50_fpn_1x_coco.py --workdir runs/x \
      --config.global_batch=16 --config.init_from=weights/r50

Every config field can be overridden with --config.FIELD=VALUE. Re-running
with the same --workdir resumes from its latest checkpoint.
"""
from scnet_jax.commands import train

if __name__ == "__main__":
  train()
