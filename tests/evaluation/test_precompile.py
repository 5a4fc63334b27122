"""Evaluator.compile: the prediction program compiled ahead (train.py
does it beside the training step's compile) is the one the evaluation
runs, for both data-parallel modes, so the evaluation compiles nothing
that reads the image batch."""
import io
import logging

import jax
import numpy as np
import pytest

from scnet_jax.evaluation.inference import Evaluator
from scnet_jax.models import build_model
from scnet_jax.predictor import abstract_variables
from tests.helpers import shapes_root, tiny_config


def _compiles(fn):
  """Runs fn with JAX's compile log on; returns the logged 'Compiling'
  lines that name the image batch (uint8)."""
  buf = io.StringIO()
  handler = logging.StreamHandler(buf)
  logger = logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles():
      fn()
  finally:
    logger.removeHandler(handler)
  return [line for line in buf.getvalue().splitlines()
          if line.startswith("Compiling") and "uint8" in line]


@pytest.mark.parametrize("parallel", ["pmap", "shard_map"])
def test_evaluation_runs_the_precompiled_program(tmp_path, parallel):
  config = tiny_config("mask_rcnn", parallel=parallel)
  root = shapes_root()
  variables = jax.tree.map(
      lambda x: np.zeros(x.shape, x.dtype),
      abstract_variables(build_model(config), config))
  evaluator = Evaluator(config, ann_file=f"{root}/annotations/val.json",
                        image_dir=f"{root}/val", evaluator="pycocotools",
                        workers=0, log=lambda *a: None)
  assert len(_compiles(lambda: evaluator.compile(variables))) == 1
  metrics = {}
  compiled = _compiles(lambda: metrics.update(evaluator(variables,
                                                        str(tmp_path))))
  assert compiled == []
  assert metrics["num_images"] == 16
