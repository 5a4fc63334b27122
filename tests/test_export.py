"""The exported predictor (jax.export, StableHLO) loads without the model
code and gives the in-process model's detections."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from scnet_jax.export import export_predictor, load_exported
from scnet_jax.models import build_model
from scnet_jax.training.state import init_variables
from tests.helpers import tiny_config, train_batches
from tests.xla_flags import xla_flags


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(folder, config, model, variables): the tiny SCNet's predictor
  exported for batches of 2."""
  out = tmp_path_factory.mktemp("export")
  config = tiny_config("scnet", **{"model.test.score_thr": 0.0})
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  variables = {"params": params, "batch_stats": stats}
  export_predictor(config, variables, str(out), batch_size=2,
                   class_names=["a", "b", "c", "d"])
  return out, config, model, variables


def test_round_trip_equals_in_process(exported):
  folder, config, model, variables = exported
  (batch,) = train_batches(config, 1)
  meta = json.loads((folder / "meta.json").read_text())
  assert meta["bucket"] == [128, 128] and meta["batch"] == 2
  assert meta["mask_kind"] == "box"

  predict = load_exported(str(folder))
  ours = predict(batch["image"], batch["image_hw"])
  ref = jax.jit(lambda v, b: model.apply(v, b, method=model.predict))(
      variables, {k: batch[k] for k in ("image", "image_hw")})
  n = np.asarray(ref.num_detections)
  assert n.min() > 0
  np.testing.assert_array_equal(ours["num_detections"], n)
  for k in ("boxes", "scores", "labels", "masks"):
    np.testing.assert_allclose(ours[k], np.asarray(getattr(ref, k)),
                               rtol=1e-5, atol=1e-5, err_msg=k)
  assert {"predict.jax", "variables.msgpack", "meta.json"} == set(
      os.listdir(folder))


def test_loading_runs_no_model_code(exported):
  """A fresh process loads and calls the export without importing
  scnet_jax.models."""
  folder, config, _, _ = exported
  d = config.model.test.max_per_img
  code = (
      "import sys, numpy as np\n"
      "from scnet_jax.export import load_exported\n"
      f"p = load_exported({str(folder)!r})\n"
      "out = p(np.zeros((2, 128, 128, 3), np.uint8), [[128, 128]] * 2)\n"
      f"assert out['boxes'].shape == (2, {d}, 4), out['boxes'].shape\n"
      "print(sorted(m for m in sys.modules if m.startswith('scnet_jax.')))\n")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True,
                     text=True, env=dict(os.environ, XLA_FLAGS=xla_flags()))
  assert p.returncode == 0, p.stderr
  assert "scnet_jax.export" in p.stdout
  assert "scnet_jax.models" not in p.stdout
