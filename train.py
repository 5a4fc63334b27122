"""Train a detector.

  python train.py --config configs/scnet_tiny_shapes.py --workdir runs/tiny
  python train.py --config configs/scnet_r50_fpn_1x_coco.py --workdir runs/x \
      --config.global_batch=16 --config.init_from=weights/r50

Every config field can be overridden with --config.FIELD=VALUE. Re-running
with the same --workdir resumes from its latest checkpoint.
"""
from absl import flags

from scnet_jax.cli import config_flag, run_cli

FLAGS = flags.FLAGS
config_flag()
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and "
                    "the final evaluation.", required=True)


def main(argv):
  del argv
  from scnet_jax.training.loop import train
  metrics = train(FLAGS.config, FLAGS.workdir)
  if metrics:
    print(f"final: bbox AP {metrics['bbox_AP']:.4f}  segm AP "
          f"{metrics['segm_AP']:.4f}  ({FLAGS.workdir}/eval/metrics.json)")


if __name__ == "__main__":
  run_cli(main)
