"""docs/extending.md's examples run as written: each block marked
`<!-- example: NAME -->` is executed as the guide shows it (it registers
its part and builds a config), then that config's training loss with its
gradient and its prediction are traced on a batch of the test dataset
(every line of the example's modules runs; nothing is compiled:
tests/models/test_custom_parts.py compiles, trains and predicts with
parts written outside the package). If the guide and the code drift
apart, this fails."""
import os
import re

import pytest

from scnet_jax.models import registry
from tests.helpers import ROOT, shapes_root, trace_train_and_predict

GUIDE = os.path.join(ROOT, "docs", "extending.md")
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)\n```",
                     re.S)


def examples():
  with open(GUIDE) as f:
    return dict(EXAMPLE.findall(f.read()))


def test_the_guide_has_its_examples():
  assert set(examples()) == {"my_neck", "my_roi_heads"}


@pytest.mark.parametrize("name,table", [("my_neck", "NECKS"),
                                        ("my_roi_heads", "ROI_HEADS")])
def test_example_traces_a_train_step_and_a_prediction(name, table):
  namespace = {"__name__": f"extending_{name}"}
  try:
    exec(compile(examples()[name], f"{GUIDE}:{name}", "exec"), namespace)
    assert name in getattr(registry, table)
    config = namespace["config"]
    config.data.shapes.update(root=shapes_root(), num_train=48, num_val=16)
    config.global_batch = 2
    losses, out = trace_train_and_predict(config)
  finally:
    getattr(registry, table).pop(name, None)
  assert {"loss_rpn_cls", "loss_cls", "loss_mask"} <= set(losses)
  assert out.boxes.shape == (2, config.model.test.max_per_img, 4)
