"""Every Orbax call in one place.

A checkpoint holds the train state (params, batch statistics, optimiser
state, step, PRNG key), the data iterator state and a small `meta` record
(model name and parts, parameter shapes digest) that tells a checkpoint of
another model from ours.

What can go wrong, and what happens:
- A save killed halfway (SIGKILL, preemption, power): Orbax writes into
  `<step>.orbax-checkpoint-tmp` and renames it when complete, so only
  complete checkpoints are listed and the last one is restored.
- A checkpoint whose files were truncated or deleted afterwards: restoring
  it fails; one warning line names it, and the one before is restored
  (resuming training first moves the damaged one to `<step>.damaged`, so
  that its step can be written again; nothing is deleted).
- A checkpoint of another config: refused in one line naming the first
  parameter whose shape differs, with both shapes.
- A failed write (a full disk): one line naming the checkpoint and the
  reason; the previous checkpoints are untouched.
"""
import hashlib
import os
import re

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from scnet_jax.errors import CheckpointError

# Config sections of the model whose `type` names the checkpoint's parts.
PARTS = ("backbone", "neck", "rpn", "roi_heads", "mask_head")


def params_digest(params):
  shapes = sorted((jax.tree_util.keystr(k), tuple(v.shape)) for k, v in
                  jax.tree_util.tree_flatten_with_path(params)[0])
  return hashlib.sha1(repr(shapes).encode()).hexdigest()[:16]


def make_meta(config, params, class_names=None):
  return {"model_name": config.model_name,
          "parts": "/".join(config.model[s].type for s in PARTS
                            if s in config.model),
          "params_digest": params_digest(params),
          "class_names": list(class_names or [])}


def resolve_dir(path):
  """The checkpoints folder of a train.py workdir, or `path` itself (a
  checkpoints folder, a converted checkpoint)."""
  path = os.path.abspath(path)
  sub = os.path.join(path, "checkpoints")
  return sub if os.path.isdir(sub) else path


def _reason(error):
  """The useful part of an Orbax / TensorStore error, on one line: the
  operating system's word where TensorStore quotes one (e.g. 'No space
  left on device')."""
  text = " ".join(str(error).split())
  os_error = re.search(r":\s*([^:\[]+?)\s*\[os_error_code='?(\d+)", text)
  if os_error:
    return f"{os_error.group(1)}, errno {os_error.group(2)}"
  return (text[:300] + " ...") if len(text) > 300 else text


def old_layout(expected, saved):
  """None, or a sentence saying that the parameter tree `saved` holds the
  RoI heads' parts at its top (bbox_head_0, ...), as checkpoints written
  before they moved under roi_heads/ do, where `expected` has them under
  roi_heads/."""
  moved = sorted(set(saved) & set(expected.get("roi_heads", {})))
  if not moved or "roi_heads" in saved:
    return None
  return (f"it holds the RoI heads' parameters at the top of the tree "
          f"({', '.join(moved[:3])}, ...), as checkpoints written before "
          f"they moved under roi_heads/ do; this version reads them only "
          f"from roi_heads/ (convert the original mmdetection or "
          f"torchvision weights again, or train anew)")


def first_shape_mismatch(expected, saved):
  """None, or a sentence naming the first parameter (in path order) that is
  in both trees with different shapes, or in only one of them.

  expected, saved: nested dicts of arrays or of anything with `.shape`.
  """
  old = old_layout(expected, saved)
  if old:
    return old
  want = flax.traverse_util.flatten_dict(expected, sep="/")
  have = flax.traverse_util.flatten_dict(saved, sep="/")
  for k in sorted(set(want) | set(have)):
    if k not in have:
      return (f"parameter {k} {tuple(np.shape(want[k]))} of the model is "
              f"missing from the checkpoint")
    if k not in want:
      return (f"the checkpoint has a parameter {k} "
              f"{tuple(np.shape(have[k]))} the model does not have")
    a, b = tuple(np.shape(have[k])), tuple(np.shape(want[k]))
    if a != b:
      return f"parameter {k} is {a} in the checkpoint but {b} in the model"
  return None


class Checkpointer:
  """Checkpoints under `directory` (workdir/checkpoints)."""

  def __init__(self, directory, max_to_keep=3, async_save=True):
    self.directory = os.path.abspath(directory)
    self._saving = None   # the step whose asynchronous write may be pending
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def _write_failed(self, step, error):
    kept = [s for s in self.manager.all_steps() if s != step]
    previous = (f"the previous checkpoint, step {max(kept)}, is kept" if kept
                else "no earlier checkpoint exists")
    return CheckpointError(
        f"{self.directory}: writing checkpoint step {step} failed "
        f"({_reason(error)}); {previous}")

  def _finish(self):
    """Waits for the pending asynchronous write; its failure is raised
    here, named by its step."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 (Orbax and TensorStore raise many)
      raise self._write_failed(self._saving, e) from None
    self._saving = None

  def save(self, step, state, data_state, meta, wait=False):
    self._finish()
    self._saving = int(step)
    try:
      self.manager.save(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state or {}),
          meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # noqa: BLE001
      raise self._write_failed(step, e) from None
    if wait:
      self._finish()

  def read_meta(self, step=None):
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def check_fits(self, step, expected_meta, params):
    """CheckpointError naming the first mismatched parameter when `step`
    holds another model's parameters than `params` (shapes)."""
    meta = self.read_meta(step)
    if meta.get("params_digest") == expected_meta["params_digest"]:
      return
    where = os.path.join(self.directory, str(step))
    saved = ocp.PyTreeCheckpointer().metadata(
        os.path.join(where, "state")).item_metadata.tree
    why = (first_shape_mismatch(params, saved.get("params", {})) or
           "parameter shapes differ")
    raise CheckpointError(
        f"{where}: checkpoint of model '{meta.get('model_name')}' "
        f"({meta.get('parts')}) does not fit the configured model "
        f"'{expected_meta['model_name']}' ({expected_meta['parts']}): {why}")

  def restore_newest(self, restore_step, log=print, set_aside=False):
    """(restore_step(step), step) for the newest checkpoint that restores.

    A checkpoint that fails to restore (truncated or deleted files) is
    named in one warning line and skipped; with set_aside it is renamed
    to `<step>.damaged`, so a resumed run can write that step again.
    CheckpointError (another model) is not a damaged checkpoint: it is
    raised.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f"{self.directory}: holds no complete checkpoint")
    moved = False
    try:
      for step in steps:
        try:
          return restore_step(step), step
        except CheckpointError:
          raise
        except Exception as e:  # noqa: BLE001
          path = os.path.join(self.directory, str(step))
          aside = ""
          if set_aside:
            os.replace(path, path + ".damaged")
            moved, aside = True, f"; moved to {path}.damaged"
          log(f"warning: checkpoint {path} cannot be restored "
              f"({_reason(e)}){aside}; trying the one before")
    finally:
      if moved:  # the manager lists the steps it saw when it opened
        self.manager.reload()
    raise CheckpointError(
        f"{self.directory}: none of the checkpoints {sorted(steps)} can be "
        f"restored (see the warnings above)")

  def host_restore(self, step):
    """Restore args reading every array of `step`'s state onto the host
    (NumPy), whatever devices wrote it: a checkpoint saved from device
    arrays records their shardings, which another device layout (another
    process count) cannot take."""
    tree = ocp.PyTreeCheckpointer().metadata(
        os.path.join(self.directory, str(step), "state")).item_metadata.tree
    return ocp.args.PyTreeRestore(restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))

  def restore(self, abstract_state, expected_meta, log=print):
    """Returns (state, data_state, step) of the newest checkpoint that
    restores (damaged ones are set aside); CheckpointError if the
    checkpoint belongs to another model."""
    def restore_step(step):
      self.check_fits(step, expected_meta, abstract_state.params)
      return self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore()))

    out, step = self.restore_newest(restore_step, log, set_aside=True)
    return out["state"], out["data"], step

  def close(self):
    self._finish()
    self.manager.close()


def read_class_names(checkpoint_dir):
  """Class names stored with the latest checkpoint ([] if none)."""
  ckpt = Checkpointer(resolve_dir(checkpoint_dir), async_save=False)
  try:
    step = ckpt.latest_step()
    return ckpt.read_meta(step).get("class_names", []) if step is not None \
        else []
  finally:
    ckpt.close()


def open_for_reading(checkpoint_dir, what="checkpoint"):
  """A Checkpointer of a workdir, its checkpoints/ folder or a converted
  checkpoint; CheckpointError if there is no such folder."""
  path = resolve_dir(checkpoint_dir)
  if not os.path.isdir(path):
    raise CheckpointError(f"{checkpoint_dir}: {what} directory not found")
  return Checkpointer(path, async_save=False)


def restore_params(checkpoint_dir, config, abstract_params, log=print):
  """Params (and batch stats) of the newest restorable checkpoint in
  `checkpoint_dir` (a workdir, its checkpoints/ folder, or a converted
  checkpoint), for evaluation, prediction and export."""
  ckpt = open_for_reading(checkpoint_dir)
  expected = make_meta(config, abstract_params["params"])

  def restore_step(step):
    ckpt.check_fits(step, expected, abstract_params["params"])
    return ckpt.manager.restore(step, args=ocp.args.Composite(
        state=ckpt.host_restore(step)))["state"]

  try:
    state, step = ckpt.restore_newest(restore_step, log)
  finally:
    ckpt.close()
  return ({"params": state["params"],
           "batch_stats": state.get("batch_stats", {})}, step)


def restore_any_params(checkpoint_dir, log=print):
  """(params, step) of the newest restorable checkpoint, whatever model
  it holds (`--config.init_from`)."""
  ckpt = open_for_reading(checkpoint_dir, "init_from checkpoint")

  def restore_step(step):
    return ckpt.manager.restore(step, args=ocp.args.Composite(
        state=ckpt.host_restore(step)))["state"]["params"]

  try:
    return ckpt.restore_newest(restore_step, log)
  finally:
    ckpt.close()


def to_host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))
