"""Evaluator.compile: the prediction program compiled ahead (train.py
does it beside the training step's compile) is the one the evaluation
runs, for both data-parallel modes: the evaluation compiles nothing
(counted through jax.monitoring)."""
import jax
import numpy as np
import pytest

from scnet_jax.evaluation.inference import Evaluator
from scnet_jax.models import build_model
from scnet_jax.training.state import abstract_variables
from tests.helpers import compiles, shapes_root, tiny_config


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
  with compiles() as seen:
    evaluator.compile(variables)
  assert len(seen) == 1, seen
  metrics = {}
  with compiles() as seen:
    metrics.update(evaluator(variables, str(tmp_path)))
  assert seen == []
  assert metrics["num_images"] == 16
