"""A config written as JSON: a run's WORKDIR/config.json (every field of
every part) or `python -m scnet_jax.summary --print_config` output.

  python train.py --config configs/from_json.py:runs/scnet_tiny/config.json \
      --workdir runs/scnet_tiny_again

The path after the colon is the JSON file; --config.FIELD=VALUE overrides
work as with any config.
"""
import json

import ml_collections


def _tuples(value):
  """JSON arrays back to the tuples the configs are written with."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def get_config(path):
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))
