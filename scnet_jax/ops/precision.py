"""Mixed precision: what runs in `model.dtype` and what stays float32.

`model.dtype` (float32 or bfloat16) is the dtype of the activations and
of every convolution and matmul of the network's layers; their
gradients flow in it too, except each convolution's kernel gradient,
which accumulates in float32 (ops/conv.py). `model.param_dtype` is the
dtype the parameters (and the optimiser's state) are stored in:
parameters are created in float32 and cast once (training/state.py).

The work below stays float32 whatever `model.dtype` (mmdetection's
mixed precision keeps the same parts in fp32). Islands that hold a
matmul run inside `float32_island(name)`, a named scope, so that a
lowered program shows where each float32 matmul comes from;
tests/training/test_precision.py lowers the bfloat16 SCNet train step
and refuses a float32 convolution or matmul outside those scopes, and a
scatter-add in bfloat16.
"""
import jax

FLOAT32_ISLANDS = {
    "roi_align": "RoIAlign's sampling weights, samples and sums, forward "
                 "and backward (its gather method's scatter-add too); the "
                 "output is cast to the features' dtype (ops/roi_align.py; "
                 "mmdetection runs its RoI extractors in fp32). Mask "
                 "targets are RoIAlign of the ground-truth crops.",
    "losses": "every loss casts its logits, deltas and targets to float32, "
              "softmax and sigmoid included (models/losses.py)",
    "boxes": "box coding, clipping, areas and IoU (ops/boxes.py), hence "
             "proposal decoding, assignment and the box losses' targets",
    "nms": "NMS scores and overlaps (ops/nms.py)",
    "norm_statistics": "GroupNorm's mean and variance "
                       "(layers.CanvasGroupNorm)",
}

# The islands that hold a matmul, and so run under float32_island.
SCOPED = ("roi_align",)


def float32_island(name):
  """The named scope of island `name` (one of SCOPED): its ops carry
  `float32_island.<name>` in their location in lowered programs."""
  if name not in SCOPED:
    raise ValueError(f"float32 island {name!r}: one of {SCOPED}")
  return jax.named_scope(f"float32_island.{name}")
