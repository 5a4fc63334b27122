"""A detector built from a neck and RoI heads written here against the
part contracts alone (scnet_jax/models/contracts.py; no class of ours is
subclassed): registered, built from a config, one jitted training step
whose gradients reach both parts, and a jitted prediction."""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scnet_jax import ops
from scnet_jax.models import build_model, registry
from scnet_jax.models.losses import normalizer
from scnet_jax.models.structures import (INSTANCE_KEYS, Detections,
                                         GroundTruth)
from scnet_jax.training.state import init_variables
from tests.helpers import (flat, grad_max, tiny_config, total_loss_fn,
                           train_batches)


class LateralNeck(nn.Module, kw_only=True):
  """A 1x1 conv per backbone level and a stride-2 subsample of the last
  for the extra level: C2..C5 -> len(strides) levels, zero outside each
  image's canvas."""
  channels: int
  strides: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, c_feats, canvas):
    levels = [canvas.mask(nn.Conv(self.channels, (1, 1), dtype=self.dtype,
                                  name=f"lateral_{i}")(x))
              for i, x in enumerate(c_feats)]
    levels.append(levels[-1][:, ::2, ::2])
    return levels[:len(self.strides)]

  def loss(self, c_feats, canvas, gt, axis_name):
    del gt, axis_name
    return self(c_feats, canvas), {}

  @classmethod
  def train_batch_keys(cls, cfg):
    del cfg
    return ()


class BoxClassifierHeads(nn.Module, kw_only=True):
  """Classifies RoIAligned boxes of the first level with one linear layer:
  trained on the ground-truth boxes, applied to the first max_per_img
  proposals at test, masks all 0.5 over their boxes."""
  num_classes: int
  channels: int
  feature_strides: Sequence[int]
  test: Any
  delta_clamp: str = "symmetric"
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  roi_size: int = 7

  @nn.compact
  def logits(self, feats, boxes, canvas):
    """boxes [B, K, 4] -> [B, K, num_classes + 1]."""
    x = ops.roi_align(feats[0], boxes, self.roi_size,
                      1.0 / self.feature_strides[0], 2,
                      canvas_hw=canvas.hw)
    x = x.reshape(*boxes.shape[:2], -1)
    return nn.Dense(self.num_classes + 1, name="classifier")(x)

  def loss(self, feats, proposals, gt, canvas, image_keys):
    del proposals, image_keys
    ce = -jnp.sum(jax.nn.log_softmax(self.logits(feats, gt.boxes, canvas)) *
                  jax.nn.one_hot(gt.labels, self.num_classes + 1), -1)
    count = normalizer(jnp.sum(gt.valid), self.axis_name)
    return {"loss_cls": jnp.sum(ce * gt.valid) / count}

  def predict(self, feats, proposals, canvas):
    d = self.test.max_per_img
    boxes, valid = proposals.boxes[:, :d], proposals.valid[:, :d]
    probs = jax.nn.softmax(self.logits(feats, boxes, canvas))
    return Detections(
        boxes=jnp.where(valid[..., None], boxes, 0.0),
        scores=jnp.where(valid, jnp.max(probs[..., :-1], -1), 0.0),
        labels=jnp.argmax(probs[..., :-1], -1).astype(jnp.int32),
        num_detections=jnp.sum(valid, 1, dtype=jnp.int32),
        masks=jnp.full((*boxes.shape[:2], 28, 28), 0.5, jnp.float32))

  @classmethod
  def train_batch_keys(cls, cfg):
    del cfg
    return INSTANCE_KEYS


def test_a_detector_of_parts_written_here_trains_and_predicts(monkeypatch):
  monkeypatch.setitem(registry.NECKS, "lateral", LateralNeck)
  monkeypatch.setitem(registry.ROI_HEADS, "box_classifier",
                      BoxClassifierHeads)
  config = tiny_config("mask_rcnn")
  config.model.neck = ml_collections.ConfigDict(
      {"type": "lateral", "channels": 32, "strides": (4, 8, 16, 32, 64)})
  config.model.roi_heads = ml_collections.ConfigDict(
      {"type": "box_classifier"})
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  assert {"neck", "roi_heads"} <= set(params)
  (batch,) = train_batches(config, 1)
  gt = GroundTruth.from_batch(batch)
  assert int(np.sum(gt.valid)) > 0
  loss = total_loss_fn(model, stats)
  (total, losses), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      params, batch, jax.random.PRNGKey(0))
  assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls"}
  assert np.isfinite(float(total))
  grads = flat(grads)
  assert grad_max(grads, "neck/") > 0
  assert grad_max(grads, "roi_heads/classifier/") > 0

  out = jax.jit(lambda b: model.apply({"params": params,
                                       "batch_stats": stats}, b,
                                      method=model.predict))(
      {k: batch[k] for k in ("image", "image_hw")})
  d = config.model.test.max_per_img
  assert out.boxes.shape == (2, d, 4) and out.masks.shape == (2, d, 28, 28)
  assert np.all(np.asarray(out.num_detections) > 0)
