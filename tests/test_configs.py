"""Every config file resolves to its whole config: each part section holds
every field its class takes (the class's default where the file leaves it
out), the model built from it is the same, and the JSON form that
`python -m scnet_jax.summary --print_config` prints and a run writes as
config.json reads back through configs/from_json.py unchanged."""
import dataclasses
import glob
import json
import os

import jax
import pytest

from scnet_jax.models import DETECTORS, build_model, resolve_config
from scnet_jax.models.registry import part_class
from scnet_jax.predictor import load_config
from tests.helpers import ROOT, run_command

CONFIGS = sorted(os.path.basename(p)[:-3] for p in
                 glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not p.endswith("from_json.py"))


def _json_module():
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "from_json", os.path.join(ROOT, "configs", "from_json.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _param_shapes(config):
  from scnet_jax.models import dummy_batch
  model = build_model(config)
  return jax.tree.map(lambda x: x.shape, jax.eval_shape(
      lambda b: model.init({"params": jax.random.PRNGKey(0),
                            "sample": jax.random.PRNGKey(1)}, b),
      dummy_batch(config, 1))["params"])


def test_every_config_resolves_to_every_field(tmp_path):
  for name in CONFIGS:
    config = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
    full = resolve_config(config)
    m = full.model
    detector = part_class(DETECTORS, "", m)
    injected = detector.part_arguments(m)
    for section, registry in detector.PARTS:
      cls = part_class(registry, section, m[section])
      takes = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
      assert set(m[section]) - {"type"} == takes - set(injected[section]), (
          name, section)
      # What the file sets is kept.
      for k, v in config.model[section].items():
        assert m[section][k] == v, (name, section, k)
    path = tmp_path / f"{name}.json"
    path.write_text(full.to_json(indent=1))
    assert _json_module().get_config(str(path)) == full, name
    build_model(full)


@pytest.mark.parametrize("name", ["scnet_tiny_shapes", "solo_tiny_shapes"])
def test_the_resolved_config_builds_the_same_model(name):
  config = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  assert _param_shapes(resolve_config(config)) == _param_shapes(config)


def test_print_config_prints_the_resolved_config():
  config = os.path.join(ROOT, "configs", "scnet_tiny_shapes.py")
  p = run_command("-m", "scnet_jax.summary", "--config", config,
                  "--config.model.num_classes=5", "--print_config")
  assert p.returncode == 0, p.stderr
  printed = json.loads(p.stdout)
  want = load_config(config)
  want.model.num_classes = 5
  assert printed == json.loads(resolve_config(want).to_json())
  # A field only the backbone's class sets (GroupNorm's group count).
  assert "gn_groups" in printed["model"]["backbone"]
