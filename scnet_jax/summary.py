"""Parameter count of each top-level part of a model, without allocating
it; or the whole config.

  python -m scnet_jax.summary --config configs/scnet_r50_fpn_1x_coco.py
  python -m scnet_jax.summary --config configs/scnet_tiny_shapes.py --print_config

Counts parameters only (BatchNorm scale and bias included, running
statistics not), from jax.eval_shape. --print_config prints the config
with every field of every part, defaults included, as JSON: what a
training run writes to WORKDIR/config.json (and what
configs/from_json.py reads back).
"""
from absl import flags

from scnet_jax.cli import config_flag, run_cli

FLAGS = flags.FLAGS


def part_counts(config):
  """{part: parameter count} via eval_shape: each top-level part, and the
  RoI heads per submodule ("roi_heads/bbox_head_0", ...); the counts sum
  to the model's total."""
  from scnet_jax.models import build_model
  from scnet_jax.training.state import abstract_variables, param_count
  params = abstract_variables(build_model(config), config)["params"]
  counts = {}
  for k, v in params.items():
    if k == "roi_heads":
      counts.update({f"{k}/{c}": param_count(s) for c, s in v.items()})
    else:
      counts[k] = param_count(v)
  return counts


def main(argv):
  del argv
  if FLAGS.print_config:
    from scnet_jax.models import resolve_config
    print(resolve_config(FLAGS.config).to_json(indent=1))
    return
  counts = part_counts(FLAGS.config)
  width = max(len(k) for k in counts)
  for k in sorted(counts):
    print(f"{k:<{width}}  {counts[k]:>12,}")
  print(f"total params: {sum(counts.values())}")


if __name__ == "__main__":
  config_flag()
  flags.DEFINE_bool("print_config", False, "Print the complete config "
                    "(every part field, defaults included) as JSON instead "
                    "of the parameter counts.")
  run_cli(main)
