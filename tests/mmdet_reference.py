"""mmdetection 3.3 as a test reference on a CPU machine without mmcv's
compiled ops.

Why: importing any `mmdet.models` module runs `mmdet/models/__init__.py`,
which imports `mmcv.ops` (e.g. `mmdet/models/layers/bbox_nms.py`:
`from mmcv.ops.nms import batched_nms`), and every module of `mmcv.ops`
loads mmcv's compiled extension at import time
(`ext_loader.load_ext('_ext', [...])`). requirements-test.txt installs
`mmcv-lite`, which ships all of mmcv's Python sources, `mmcv.ops`
included, but not the compiled `mmcv._ext`.

What this module does: before anything imports `mmcv.ops`, it registers a
stand-in module `mmcv._ext` in `sys.modules`. Nothing else is replaced:
mmcv's and mmdet's own Python code (assigners, samplers, heads, `RoIAlign`
and `batched_nms` wrappers, ...) imports and runs unchanged. The stand-in
holds only kernels, taken from torchvision, never from scnet_jax:

  * `nms(boxes, scores, iou_threshold, offset)`: `torchvision.ops.nms`
    (greedy NMS in descending score order, suppressing IoU > threshold,
    the same rule as mmcv's kernel); only offset 0 (mmdet >= 2.0 boxes),
    other offsets raise. Order among exactly equal scores may differ from
    mmcv's kernel. Used by `mmcv.ops.nms` and `mmcv.ops.batched_nms`.
  * `roi_align_forward(...)`: `torchvision.ops.roi_align` (the same
    bilinear RoIAlign with adaptive sampling_ratio=0 and the `aligned`
    half-pixel offset); average pooling only, max pooling raises. Used by
    `mmcv.ops.RoIAlign` / `roi_align` forward passes.
  * `roi_align_backward(...)`: torchvision's `_roi_align_backward` (the
    adjoint of the same kernel), for mmdet training steps (bench/gpu.py).

Every other attribute of the stand-in is a stub that raises
NotImplementedError when called, so `mmcv.ops` imports (its `load_ext`
only checks that the names exist) but a test can never silently run a
kernel that is not there.

If a real `mmcv._ext` is importable (full mmcv installed), it is used and
nothing is registered.

Use: `from tests.mmdet_reference import mmdet_import` and
`MaxIoUAssigner = mmdet_import('mmdet.models.task_modules.assigners')
.MaxIoUAssigner`, or call `install()` and import mmdet modules directly.
"""
import importlib
import importlib.util
import sys
import types

import torch
import torchvision

_EXT = "mmcv._ext"


def _nms(boxes, scores, iou_threshold, offset=0):
  if offset != 0:
    raise NotImplementedError("mmcv._ext.nms stand-in: only offset=0")
  return torchvision.ops.nms(boxes, scores, float(iou_threshold))


def _roi_align_forward(input, rois, output, argmax_y, argmax_x, *,
                       aligned_height, aligned_width, spatial_scale,
                       sampling_ratio, pool_mode, aligned):
  del argmax_y, argmax_x  # written only by max pooling
  if pool_mode != 1:
    raise NotImplementedError(
        "mmcv._ext.roi_align_forward stand-in: only pool_mode='avg'")
  output.copy_(torchvision.ops.roi_align(
      input, rois, (aligned_height, aligned_width), spatial_scale,
      sampling_ratio, aligned))


def _roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input,
                        *, aligned_height, aligned_width, spatial_scale,
                        sampling_ratio, pool_mode, aligned):
  del argmax_y, argmax_x
  if pool_mode != 1:
    raise NotImplementedError(
        "mmcv._ext.roi_align_backward stand-in: only pool_mode='avg'")
  n, c, h, w = grad_input.shape
  grad_input.copy_(torch.ops.torchvision._roi_align_backward(
      grad_output.contiguous(), rois, spatial_scale, aligned_height,
      aligned_width, n, c, h, w, sampling_ratio, aligned))


def _missing(name):
  def stub(*args, **kwargs):
    raise NotImplementedError(
        f"mmcv._ext.{name} is a stub (tests/mmdet_reference.py): mmcv's "
        "compiled ops are not installed")
  stub.__name__ = name
  return stub


def _make_ext():
  ext = types.ModuleType(_EXT)
  ext.__doc__ = "Stand-in for mmcv's compiled ops; see tests/mmdet_reference.py."
  ext.IS_STAND_IN = True
  ext.nms = _nms
  ext.roi_align_forward = _roi_align_forward
  ext.roi_align_backward = _roi_align_backward

  def __getattr__(name):
    if name.startswith("__"):
      raise AttributeError(name)
    return _missing(name)

  ext.__getattr__ = __getattr__
  return ext


def install():
  """Registers the stand-in `mmcv._ext` unless a real one exists.

  Returns True when the stand-in is in use. Must run before `mmcv.ops` is
  first imported (a module of mmcv.ops keeps the extension it loaded).
  """
  if _EXT in sys.modules:
    return bool(getattr(sys.modules[_EXT], "IS_STAND_IN", False))
  importlib.import_module("mmcv")
  if importlib.util.find_spec(_EXT) is not None:
    return False
  if "mmcv.ops" in sys.modules:
    raise RuntimeError("mmcv.ops was imported before the mmcv._ext stand-in")
  sys.modules[_EXT] = _make_ext()
  return True


def mmdet_import(module):
  """Imports an mmdet (or mmcv) module after `install()`."""
  install()
  return importlib.import_module(module)
