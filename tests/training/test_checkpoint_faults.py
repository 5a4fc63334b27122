"""Checkpoints that cannot be lost or misread: a damaged checkpoint is
named and the one before it restored, a checkpoint of another config is
refused naming the first mismatched parameter and both shapes, and a
failed write (a full disk, here a real write error from the operating
system) is one line that keeps the previous checkpoint. A save killed by
SIGKILL is tested through train.py in test_resume.py."""
import glob
import os
import subprocess
import sys
import textwrap

import flax
import numpy as np
import pytest

from scnet_jax import checkpoint
from scnet_jax.errors import CheckpointError
from scnet_jax.training.init_weights import load_init_weights
from tests.helpers import ROOT


@flax.struct.dataclass
class _State:
  params: dict
  step: np.ndarray


def _state(value, shape=(16, 8)):
  return _State({"head": {"kernel": np.full(shape, value, np.float32)},
                 "bias": np.full((8,), value, np.float32)},
                np.asarray(value, np.int32))


def _meta(state, name="model"):
  return {"model_name": name, "parts": "a/b",
          "params_digest": checkpoint.params_digest(state.params),
          "class_names": []}


def _write(directory, steps, shape=(16, 8)):
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=5)
  for s in steps:
    st = _state(s, shape)
    ckpt.save(s, st, {"step": s}, _meta(st), wait=True)
  ckpt.close()


def _damage(directory, step, how):
  files = glob.glob(os.path.join(directory, str(step), "state", "**", "d",
                                 "*"), recursive=True)
  assert files
  for f in files:
    if how == "truncate":
      with open(f, "r+b") as fh:
        fh.truncate(7)
    else:
      os.remove(f)


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_damaged_checkpoint_falls_back_to_the_one_before(tmp_path, how):
  d = str(tmp_path / "checkpoints")
  _write(d, [1, 2, 3])
  _damage(d, 3, how)
  lines = []
  ckpt = checkpoint.Checkpointer(d)
  state, data, step = ckpt.restore(_state(0), _meta(_state(0)), lines.append)
  assert step == 2 and data == {"step": 2}
  np.testing.assert_array_equal(state.params["bias"], 2)
  (line,) = lines
  assert line.startswith(f"warning: checkpoint {d}/3 cannot be restored (")
  assert line.endswith(f"; moved to {d}/3.damaged; trying the one before")
  # The damaged files are kept aside, and step 3 can be written again.
  assert os.path.isdir(f"{d}/3.damaged") and ckpt.latest_step() == 2
  ckpt.save(3, _state(5), {"step": 3}, _meta(_state(5)), wait=True)
  ckpt.close()


def test_restore_params_skips_a_damaged_checkpoint(tmp_path):
  d = str(tmp_path / "checkpoints")
  _write(d, [1, 2])
  _damage(d, 2, "truncate")
  lines = []
  config = _Config()
  variables, step = checkpoint.restore_params(
      str(tmp_path), config, {"params": _state(0).params}, lines.append)
  assert step == 1
  np.testing.assert_array_equal(variables["params"]["head"]["kernel"], 1)
  assert len(lines) == 1 and f"checkpoint {d}/2 cannot be restored" in \
      lines[0] and "moved" not in lines[0]
  assert sorted(os.listdir(d)) == ["1", "2"]   # nothing moved or deleted
  _damage(d, 1, "delete")
  with pytest.raises(CheckpointError, match=r"none of the checkpoints \[1, "
                     r"2\] can be restored"):
    checkpoint.restore_params(str(tmp_path), config,
                              {"params": _state(0).params}, lines.append)


class _Config(dict):
  """The two fields make_meta reads."""
  model_name = "model"
  model = {}


def test_checkpoint_of_another_config_names_the_parameter(tmp_path):
  d = str(tmp_path / "checkpoints")
  _write(d, [1])
  other = _state(0, shape=(16, 5))
  with pytest.raises(CheckpointError) as e:
    checkpoint.restore_params(str(tmp_path), _Config(),
                              {"params": other.params})
  assert str(e.value).endswith(
      "does not fit the configured model 'model' (): parameter head/kernel "
      "is (16, 8) in the checkpoint but (16, 5) in the model")
  ckpt = checkpoint.Checkpointer(d)
  with pytest.raises(CheckpointError, match=r"head/kernel is \(16, 8\) in "
                     r"the checkpoint but \(16, 5\)"):
    ckpt.restore(other, _meta(other))
  ckpt.close()


def test_checkpoint_of_the_old_layout_is_refused_naming_the_change():
  """Before the RoI heads had their own scope, their parts sat at the top
  of the parameter tree beside the backbone."""
  arr = np.zeros((2, 2), np.float32)
  old = {"backbone": {"conv1": arr}, "bbox_head_0": {"fc_cls": arr},
         "mask_head_0": {"conv_logits": arr}}
  new = {"backbone": {"conv1": arr}, "roi_heads": {
      "bbox_head_0": {"fc_cls": arr}, "mask_head_0": {"conv_logits": arr}}}
  why = checkpoint.first_shape_mismatch(new, old)
  assert why.startswith("it holds the RoI heads' parameters at the top of "
                        "the tree (bbox_head_0, mask_head_0, ...)")
  assert "roi_heads/" in why and "\n" not in why
  assert checkpoint.first_shape_mismatch(new, new) is None
  # A backbone-only checkpoint (init_from) is not the old layout.
  assert checkpoint.old_layout(new, {"backbone": old["backbone"]}) is None


def test_init_from_refuses_another_shape_unless_asked(tmp_path):
  d = str(tmp_path / "checkpoints")
  _write(d, [4])
  params = _state(0, shape=(16, 5)).params
  params["new"] = np.zeros(3, np.float32)
  config = _Config()
  config.init_skip_mismatched = False
  with pytest.raises(CheckpointError, match=r"step 4\): parameter "
                     r"head/kernel is \(16, 8\) in init_from but \(16, 5\) in "
                     r"the model model: .*init_skip_mismatched=True"):
    load_init_weights(config, params, str(tmp_path))
  config.init_skip_mismatched = True
  lines = []
  out = load_init_weights(config, params, str(tmp_path), lines.append)
  np.testing.assert_array_equal(out["bias"], 4)   # taken
  np.testing.assert_array_equal(out["head"]["kernel"], 0)   # fresh
  assert lines == [f"init_from {tmp_path} (step 4): 1 of 3 parameter arrays "
                   f"loaded; 1 of another shape start fresh"]


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from tests.training.test_checkpoint_faults import _meta, _state
    from scnet_jax import checkpoint
    from scnet_jax.errors import CheckpointError
    ckpt = checkpoint.Checkpointer(sys.argv[1], async_save=sys.argv[2] == "1")
    ckpt.save(1, _state(1), {}, _meta(_state(1)), wait=True)
    # From here on no file may grow past 64 KiB: the operating system
    # refuses the write (EFBIG), as a full disk refuses it (ENOSPC).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
    big = _state(2, shape=(512, 512))  # incompressible, unlike a constant
    big.params["head"]["kernel"] = np.random.default_rng(0).random(
        (512, 512), np.float32)
    try:
      ckpt.save(2, big, {}, _meta(big), wait=False)
      ckpt.close()
    except CheckpointError as e:
      print("error:", e)
""")


@pytest.mark.parametrize("async_save", [False, True])
def test_failed_write_is_one_line_and_keeps_the_previous(tmp_path,
                                                         async_save):
  d = str(tmp_path / "checkpoints")
  p = subprocess.run([sys.executable, "-c", _FULL_DISK, d,
                      str(int(async_save))], capture_output=True, text=True,
                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
  (line,) = [ln for ln in p.stdout.splitlines() if ln.startswith("error:")]
  assert line.startswith(f"error: {d}: writing checkpoint step 2 failed (")
  assert "File too large" in line, line
  assert line.endswith("); the previous checkpoint, step 1, is kept")
  variables, step = checkpoint.restore_params(
      str(tmp_path), _Config(), {"params": _state(0).params})
  assert step == 1
  np.testing.assert_array_equal(variables["params"]["bias"], 1)
