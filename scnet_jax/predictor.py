"""Predictor: a trained model as a function of images.

  from scnet_jax import Predictor
  p = Predictor.from_checkpoint("configs/scnet_tiny_shapes.py", "runs/tiny")
  out = p(image)   # HxWx3 uint8 RGB
  out["boxes"], out["scores"], out["labels"], out["masks"]

Images of any size are resized (keep ratio, as in training) and padded into
the configured buckets, and batches are padded to a fixed size, so repeated
calls reuse one compiled program per bucket. A batch is split over every
local device (jax.shard_map).
"""
import jax
import numpy as np

from scnet_jax import checkpoint
from scnet_jax.data import transforms
from scnet_jax.data.resize import check_rule
from scnet_jax.evaluation.postprocess import (detections_in_image,
                                              image_detections)
from scnet_jax.evaluation.inference import make_predict
from scnet_jax.models import build_model
from scnet_jax.parallel import DataParallel
from scnet_jax.training.state import abstract_variables


def load_config(config):
  """A ConfigDict, or the path of a config file (its get_config())."""
  if isinstance(config, str):
    import importlib.util
    spec = importlib.util.spec_from_file_location("scnet_jax_user_config",
                                                  config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
  return config


class Predictor:
  """Callable on one image (or `predict_batch` on a list).

  batch_size: images per compiled call, rounded up to a multiple of the
  local device count.
  """

  def __init__(self, config, variables, class_names=None, batch_size=1,
               score_thr=None):
    self.config = config
    self.model = build_model(config)
    self._dp = DataParallel("shard_map", make_predict(self.model),
                            donate=False, out_sharded=True,
                            devices=jax.local_devices())
    self.variables = self._dp.put_replicated(variables)
    self.class_names = list(class_names) if class_names else [
        f"class_{i}" for i in range(config.model.num_classes)]
    n = jax.local_device_count()
    self.batch_size = -(-batch_size // n) * n
    self.score_thr = config.model.test.score_thr if score_thr is None \
        else score_thr
    self.buckets = transforms.check_buckets(config.data.buckets)
    check_rule(config.data.resize)

  @classmethod
  def from_checkpoint(cls, config, checkpoint_dir, **kwargs):
    config = load_config(config)
    model = build_model(config)
    variables, _ = checkpoint.restore_params(
        checkpoint_dir, config, abstract_variables(model, config))
    names = checkpoint.read_class_names(checkpoint_dir)
    return cls(config, variables, class_names=names, **kwargs)

  def _prepare(self, image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
      raise ValueError(f"expected an HxWx3 uint8 RGB image, got "
                       f"{image.dtype} {image.shape}")
    h, w = image.shape[:2]
    bucket, padded, (nh, nw) = transforms.resize_and_pad(
        image, self.config.data.image_scale, self.buckets,
        self.config.data.resize)
    return bucket, padded, (nh, nw), (nw / w, nh / h), (h, w)

  def __call__(self, image):
    return self.predict_batch([image])[0]

  def predict_batch(self, images):
    """list of HxWx3 uint8 -> list of dicts: boxes [n, 4] float32 (x1, y1,
    x2, y2 in image pixels), scores [n], labels [n] int (contiguous, see
    class_names), masks [n, H, W] bool."""
    prepared = [self._prepare(im) for im in images]
    results = [None] * len(images)
    for bucket in sorted({p[0] for p in prepared}):
      idx = [i for i, p in enumerate(prepared) if p[0] == bucket]
      for start in range(0, len(idx), self.batch_size):
        chunk = idx[start:start + self.batch_size]
        pad = self.batch_size - len(chunk)
        rows = [prepared[i] for i in chunk] + [prepared[chunk[-1]]] * pad
        batch = {"image": np.stack([r[1] for r in rows]),
                 "image_hw": np.array([r[2] for r in rows], np.int32)}
        out = self._dp.get_sharded(self._dp(self.variables,
                                            self._dp.put_batch(batch)))
        for j, i in enumerate(chunk):
          results[i] = self._finish(image_detections(out, j), prepared[i])
    return results

  def _finish(self, det, prepared):
    _, _, _, scale, hw = prepared
    return detections_in_image(det, scale, hw, self.score_thr,
                               self.config.model.test.mask_thr)
