"""The network's input: pixels normalised, then zero-padded.

mmdetection, detectron2 and torchvision normalise an image and pad it with
zeros afterwards, so the padding is the mean colour, not black. One
function does it for every path (training, evaluation, the Predictor, an
export): the detector applies it to the uint8 batch.
"""
import jax.numpy as jnp


def normalize_and_pad(image, image_hw, mean, std):
  """Normalised pixels inside each image, zeros everywhere else.

  Args:
    image: [B, H, W, 3] uint8 RGB, each image top-left in the canvas
      (whatever lies past image_hw is ignored).
    image_hw: [B, 2] int32 resized, unpadded image sizes.
    mean, std: 3 per-channel values in pixel units (RGB).
  Returns:
    [B, H, W, 3] float32: (pixel - mean) / std inside image_hw, 0 outside.
  """
  h, w = image.shape[1:3]
  hw = jnp.asarray(image_hw, jnp.int32)
  inside = ((jnp.arange(h)[None, :, None] < hw[:, 0, None, None]) &
            (jnp.arange(w)[None, None, :] < hw[:, 1, None, None]))
  x = (image.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / \
      jnp.asarray(std, jnp.float32)
  return jnp.where(inside[..., None], x, 0.0)
