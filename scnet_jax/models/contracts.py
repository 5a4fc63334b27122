"""What each kind of part must provide, written once.

A part is a Flax module with keyword-only fields: its config section's
fields plus what the detector passes it (detectors/two_stage.py and
one_stage.py, `part_arguments`). When a model is built, the registered
class of each section is checked against its kind's contract here
(`missing_members`): a class that lacks a method is refused in one line.
These Protocols are for reading and for type checkers; no part inherits
from them.

Shapes: B images of one bucket [B, H, W] (H, W multiples of 32); each
image lies top-left in it. The detector builds the batch's
`structures.Canvas` once (each image's size `image_hw` [B, 2] int32 and
its padded canvas) and passes it with the levels to every part after the
backbone; no part rebuilds it. Boxes are (x1, y1, x2, y2) float32 in
resized-image pixels. Losses are dicts of named float32 scalars with
their weights applied: every method that computes losses returns its
own dict, and the detector merges them (`losses.merge_losses`: a name
returned twice is an error); the train step sums every entry and logs
each. Names: `loss_<what>` (mmdetection's), prefixed `s<k>.` for the
k-th of several box or mask stages and `ext.` for the second round of
MNC's 5-stage cascade.
"""
from typing import Any, Protocol, Sequence


class Backbone(Protocol):
  """`model.backbone` (registry.BACKBONES)."""

  def __call__(self, image: Any, canvas: Any) -> Sequence[Any]:
    """image [B, H, W, 3] normalised, zero outside each image's canvas ->
    C2..C5 [B, H / s, W / s, C_s] at strides 4, 8, 16, 32."""

  # Optional: `frozen_parameters(section)`, a classmethod naming the
  # parameters the optimiser leaves untouched (see ResNet).


class Neck(Protocol):
  """`model.neck` (registry.NECKS)."""

  def __call__(self, c_feats: Sequence[Any], canvas: Any) -> Sequence[Any]:
    """C2..C5 -> len(strides) levels [B, H / s, W / s, channels], zero
    outside each image's canvas (test)."""

  def loss(self, c_feats: Sequence[Any], canvas: Any, gt: Any,
           axis_name: Any) -> tuple:
    """(the levels as __call__ gives them, the neck's own losses, {} if
    none) in training; gt: structures.GroundTruth."""

  @classmethod
  def train_batch_keys(cls, cfg: Any) -> tuple:
    """Batch keys `loss` reads besides the images' (e.g. gt_semantic)."""


class DenseHead(Protocol):
  """`model.rpn` (registry.DENSE_HEADS): proposals for the RoI heads."""

  def __call__(self, feats: Sequence[Any]) -> tuple:
    """Per-level raw outputs (objectness, deltas)."""

  def proposals(self, feats: Sequence[Any], canvas: Any,
                outputs: Any = None) -> Any:
    """structures.Proposals: [B, N, 4] boxes and [B, N] validity (test)."""

  def loss_and_proposals(self, feats: Sequence[Any], gt: Any,
                         canvas: Any, image_keys: Any) -> tuple:
    """(its losses, the training structures.Proposals); image_keys: [B]
    PRNG keys of the sampling."""


class RoIHeads(Protocol):
  """`model.roi_heads` (registry.ROI_HEADS): boxes and masks from the
  proposals."""

  def loss(self, feats: Sequence[Any], proposals: Any, gt: Any,
           canvas: Any, image_keys: Any) -> dict:
    """Its losses (stage losses prefixed `s<k>.`)."""

  def predict(self, feats: Sequence[Any], proposals: Any,
              canvas: Any) -> Any:
    """structures.Detections: [B, D] padded detections, box-relative
    masks."""

  @classmethod
  def train_batch_keys(cls, cfg: Any) -> tuple:
    """Batch keys `loss` reads besides the images'."""

  # Optional: `TTA = True` where eval.py --tta may run the head through
  # `context_and_losses`, `predict_boxes`, `predict_masks` and `detect`
  # (StandardRoIHeads and its cascades); refused otherwise.


class MaskHead(Protocol):
  """`model.mask_head` (registry.MASK_HEADS): a one-stage model's
  instances from the levels, no proposals."""

  def loss(self, feats: Sequence[Any], canvas: Any, gt: Any,
           image_keys: Any) -> dict:
    """Its losses."""

  def predict(self, feats: Sequence[Any], canvas: Any) -> Any:
    """structures.Detections with image-level masks."""

  @classmethod
  def check_test(cls, test: Any) -> None:
    """Refuses model.test settings it cannot use (ConfigError)."""


# The contract of each config section.
CONTRACTS = {"backbone": Backbone, "neck": Neck, "rpn": DenseHead,
             "roi_heads": RoIHeads, "mask_head": MaskHead}


def members(contract):
  """The methods a contract requires, in the order written."""
  return [name for name, value in vars(contract).items()
          if (callable(value) or isinstance(value, classmethod)) and
          (name == "__call__" or not name.startswith("_"))]


def missing_members(section, cls):
  """The methods of `section`'s contract that `cls` lacks."""
  contract = CONTRACTS[section]
  return [name for name in members(contract) if not hasattr(cls, name)]
