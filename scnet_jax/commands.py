"""Console entry points (pyproject.toml, [project.scripts]):

  scnet-train    what `python train.py` runs (train_main)
  scnet-eval     what `python eval.py` runs (eval_main)
  scnet-predict  `python -m scnet_jax.predict_images`
  scnet-export   `python -m scnet_jax.export`

Each takes the same flags as the command it stands for. The flags of a
command are defined when that command starts, not at import, so one
process can import this module without a command's required flags
(--workdir, --checkpoint) becoming everyone's.
"""
import os
import runpy

from absl import flags

from scnet_jax.cli import checkpoint_flag, config_flag, run_cli

FLAGS = flags.FLAGS


# ------------------------------------------------------------------ train
TRAIN_USAGE = r"""Train a detector (python train.py, or scnet-train).

  python train.py --config configs/scnet_tiny_shapes.py --workdir runs/tiny
  python train.py --config configs/scnet_r50_fpn_1x_coco.py --workdir runs/x \
      --config.global_batch=16 --config.init_from=weights/r50

Every config field can be overridden with --config.FIELD=VALUE. Re-running
with the same --workdir resumes from its latest checkpoint.
"""


def define_train_flags():
  """--config (with --config.FIELD=VALUE overrides) and --workdir."""
  config_flag()
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and "
                      "the final evaluation.", required=True)


def train_main(argv):
  """Trains FLAGS.config into FLAGS.workdir (resuming from its latest
  checkpoint) and prints the final evaluation's AP."""
  del argv
  from scnet_jax.training.loop import train  # local: not commands.train
  metrics = train(FLAGS.config, FLAGS.workdir)
  if metrics:
    print(f"final: bbox AP {metrics['bbox_AP']:.4f}  segm AP "
          f"{metrics['segm_AP']:.4f}  ({FLAGS.workdir}/eval/metrics.json)")


def train():
  """scnet-train: train a detector (the flags of train.py)."""
  define_train_flags()
  run_cli(train_main, usage=TRAIN_USAGE)


# ------------------------------------------------------------------- eval
EVAL_USAGE = r"""Evaluate a checkpoint on a COCO-format split (python eval.py, or
scnet-eval).

  python eval.py --config configs/scnet_tiny_shapes.py --checkpoint runs/tiny
  python eval.py --config configs/scnet_r50_fpn_1x_coco.py --checkpoint DIR \
      --config.data.val.ann_file=... --config.data.val.image_dir=... \
      --output runs/eval --evaluator pycocotools --visualize 8

Prints the COCO bbox and segm tables, writes OUTPUT/results.json and
OUTPUT/metrics.json (and OUTPUT/vis/*.png with --visualize). Started as
several processes (docs/distributed.md) they split the images and process 0
writes the files.
"""


def define_eval_flags():
  """--config, --checkpoint and eval.py's options."""
  config_flag()
  checkpoint_flag()
  flags.DEFINE_string("output", None, "Output folder (default: "
                      "CHECKPOINT/eval).")
  flags.DEFINE_enum("evaluator", "faster_coco_eval",
                    ["faster_coco_eval", "pycocotools"], "COCO API to use.")
  flags.DEFINE_integer("visualize", 0, "Write this many prediction "
                       "pictures.")
  flags.DEFINE_float("vis_score_thr", 0.3, "Display threshold of the "
                     "pictures (independent of the evaluation threshold).")
  flags.DEFINE_bool("compare_gt", False, "Pictures show the ground truth "
                    "beside the predictions.")
  flags.DEFINE_integer("batch_per_device", None, "Images per device per "
                       "batch (default: the config's "
                       "eval_batch_per_device, as training's evaluation).")
  flags.DEFINE_bool("tta", False, "Also evaluate with test-time "
                    "augmentation (config.test_aug: scales and flip), into "
                    "OUTPUT/tta.")
  flags.DEFINE_integer("workers", 2, "Post-processing worker processes.")


def eval_main(argv):
  """Evaluates FLAGS.checkpoint on the config's validation split: COCO
  tables, OUTPUT/results.json and metrics.json, pictures, TTA."""
  del argv
  from scnet_jax.parallel import initialize_distributed
  initialize_distributed()  # several processes split the images
  import jax

  from scnet_jax import checkpoint
  from scnet_jax.data.sources import val_paths
  from scnet_jax.evaluation.inference import Evaluator
  from scnet_jax.models import build_model
  from scnet_jax.training.state import abstract_variables

  config = FLAGS.config
  if FLAGS.tta:  # refused before the long plain evaluation, not after
    from scnet_jax.evaluation.tta import check_config
    check_config(config)
  ann_file, image_dir = val_paths(config)
  # Reads and checks the annotations before the checkpoint and compiling.
  evaluator = Evaluator(config, ann_file=ann_file, image_dir=image_dir,
                        evaluator=FLAGS.evaluator,
                        per_device_batch=(FLAGS.batch_per_device or
                                          config.eval_batch_per_device),
                        workers=FLAGS.workers)
  model = build_model(config)
  variables, step = checkpoint.restore_params(
      FLAGS.checkpoint, config, abstract_variables(model, config))
  print(f"Loaded {FLAGS.checkpoint} (step {step})")
  output = FLAGS.output or os.path.join(FLAGS.checkpoint, "eval")
  metrics = evaluator(variables, output)
  if FLAGS.visualize and jax.process_index() == 0:
    from scnet_jax.evaluation.pictures import write_prediction_pictures
    paths = write_prediction_pictures(
        os.path.join(output, "results.json"), ann_file, image_dir,
        os.path.join(output, "vis"), FLAGS.visualize, FLAGS.vis_score_thr,
        compare_gt=FLAGS.compare_gt,
        class_names=checkpoint.read_class_names(FLAGS.checkpoint))
    print(f"wrote {len(paths)} pictures to {os.path.join(output, 'vis')}")
  print(f"bbox AP {metrics['bbox_AP']:.4f}  segm AP {metrics['segm_AP']:.4f}"
        f"  ({os.path.join(output, 'metrics.json')})")
  if FLAGS.tta and jax.process_index() == 0:  # TTA runs on process 0 alone
    from scnet_jax.evaluation.tta import evaluate_tta
    tta = evaluate_tta(config, variables, ann_file=ann_file,
                       image_dir=image_dir,
                       output_dir=os.path.join(output, "tta"),
                       evaluator=FLAGS.evaluator)
    print(f"TTA: bbox AP {tta['bbox_AP']:.4f}  segm AP {tta['segm_AP']:.4f}"
          f"  (plain {metrics['bbox_AP']:.4f} / {metrics['segm_AP']:.4f}; "
          f"{os.path.join(output, 'tta', 'metrics.json')})")


def evaluate():
  """scnet-eval: evaluate a checkpoint (the flags of eval.py)."""
  define_eval_flags()
  run_cli(eval_main, usage=EVAL_USAGE)


# ------------------------------------------------------ predict and export
def _run_module_as_main(name):
  """Runs module `name` as `python -m name` does, with this process's
  command-line arguments: its `if __name__ == "__main__"` block defines
  the flags and calls its main."""
  runpy.run_module(name, run_name="__main__", alter_sys=True)


def predict():
  """scnet-predict: `python -m scnet_jax.predict_images`."""
  _run_module_as_main("scnet_jax.predict_images")


def export():
  """scnet-export: `python -m scnet_jax.export`."""
  _run_module_as_main("scnet_jax.export")
