"""bfloat16 training as ops/precision.py states it, read from the StableHLO
of the tiny SCNet's train step (lowered, not compiled): every
convolution and matmul of the network in bfloat16, float32 ones only
inside the listed float32 islands, no scatter-add accumulating in
bfloat16."""
import collections
import re

import jax
import pytest

from scnet_jax.models import build_model, dummy_batch
from scnet_jax.ops.precision import FLOAT32_ISLANDS, SCOPED
from scnet_jax.parallel import AXIS, DataParallel
from scnet_jax.training import optim
from scnet_jax.training.state import abstract_variables, create_state
from scnet_jax.training.step import make_train_step
from tests.helpers import tiny_config

OPS = ("convolution", "dot_general", "scatter", "select_and_scatter")


def _locations(text):
  """#locN -> the first op name (a '/'-separated name stack) its
  location chain holds."""
  raw = dict(re.findall(r"^(#loc\d+) = (loc\(.*\))$", text, re.M))

  def name(ref, depth=0):
    s = raw.get(ref, "")
    m = re.match(r'loc\("([^"]*)"', s)
    if m and "/" in m.group(1):
      return m.group(1)
    for inner in re.findall(r"#loc\d+", s) if depth < 12 else ():
      found = name(inner, depth + 1)
      if found:
        return found
    return ""

  return {ref: name(ref) for ref in raw}


def _ops(text):
  """(op, operand element types, op name stack) of every convolution,
  dot_general and (select_and_)scatter in a module printed with debug
  info. A scatter spans lines: its types and location close its region."""
  names = _locations(text)
  lines = text.splitlines()
  found = []
  for i, line in enumerate(lines):
    m = re.search(r'"?stablehlo\.(%s)\b' % "|".join(OPS), line)
    if not m:
      continue
    sig = line
    if m.group(1) in ("scatter", "select_and_scatter"):
      sig = next(l for l in lines[i:] if l.lstrip().startswith("}) : ("))
    operands = sig.rsplit(" : (", 1)[1].split(") -> ")[0]
    types = tuple(re.findall(r"x?(bf16|f32|f64|i1|i32)>", operands))
    ref = re.search(r"loc\((#loc\d+)\)\s*$", sig)
    found.append((m.group(1), types, names.get(ref.group(1), "")
                  if ref else ""))
  return found


@pytest.fixture(scope="module")
def ops():
  config = tiny_config("scnet", **{"model.dtype": "bfloat16"})
  model = build_model(config, axis_name=AXIS)
  variables = abstract_variables(model, config)
  tx = optim.make_optimizer(config, variables["params"], 100)
  state = jax.eval_shape(lambda v: create_state(
      v["params"], v.get("batch_stats", {}), tx, 0), variables)
  step = DataParallel("shard_map", make_train_step(model, tx),
                      devices=jax.devices()[:1])
  text = step.fn.lower(state, dummy_batch(config, 2)).as_text(
      debug_info=True)
  return _ops(text)


def _island(name):
  return next((i for i in SCOPED if f"float32_island.{i}" in name), None)


def test_convolutions_and_matmuls_are_bfloat16_outside_the_islands(ops):
  counts = collections.Counter()
  for op, types, name in ops:
    if op not in ("convolution", "dot_general"):
      continue
    if "f32" in types or "f64" in types:
      island = _island(name)
      assert island is not None, (
          f"a {op} on {types} outside the float32 islands: {name}")
      counts[island] += 1
    else:
      assert types[:2] == ("bf16", "bf16"), (op, types, name)
      counts[op] += 1
  # The network runs in bfloat16 and RoIAlign in float32, forward and
  # backward (a stale scope name would leave these at 0).
  assert counts["convolution"] > 100 and counts["dot_general"] > 100, counts
  assert counts["roi_align"] > 10, counts
  assert set(SCOPED) <= set(FLOAT32_ISLANDS)


def test_no_scatter_add_in_bfloat16(ops):
  scatters = [(op, types, name) for op, types, name in ops
              if op in ("scatter", "select_and_scatter")]
  assert scatters
  for op, types, name in scatters:
    if op == "select_and_scatter":
      # Max-pooling's gradient (the ResNet stem, 3x3 windows at stride 2):
      # each input cell receives at most 4 window maxima, not a long sum.
      assert name.endswith("backbone/select_and_scatter"), name
      continue
    assert "bf16" not in types, (op, types, name)
