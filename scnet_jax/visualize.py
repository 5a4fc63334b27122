r"""Pictures of what the loader feeds the model.

  python -m scnet_jax.visualize --config configs/scnet_tiny_shapes.py \
      --out runs/samples --num 4

draws loaded, augmented training samples (boxes, masks from their crops,
and the stride-8 semantic map beside them), drawn by scnet_jax/drawing.py
(which also draws eval.py --visualize N's predictions).
"""
import os

from absl import flags

from scnet_jax.cli import config_flag, run_cli
from scnet_jax.drawing import draw_batch


def main(argv):
  del argv
  from scnet_jax.data import loader
  from scnet_jax.data.sources import train_source
  config = flags.FLAGS.config
  src = train_source(config)
  c = config.copy_and_resolve_references()
  c.global_batch = flags.FLAGS.num
  it, _ = loader.train_iterator(src, c, 1)
  os.makedirs(flags.FLAGS.out, exist_ok=True)
  for i, pic in enumerate(draw_batch(next(it), src.class_names)):
    path = os.path.join(flags.FLAGS.out, f"sample_{i}.png")
    pic.save(path)
    print(path)


if __name__ == "__main__":
  config_flag()
  flags.DEFINE_string("out", "samples", "Output folder for the PNGs.")
  flags.DEFINE_integer("num", 4, "Number of samples to draw.")
  run_cli(main)
