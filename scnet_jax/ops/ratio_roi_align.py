"""RoIAlign over FPN levels picked by the box's share of the image
(D2Det / CoMask `SingleRoIExtractorWithRatio`) instead of its absolute
size: level = ceil(max_level - log2(image_area / box_area)), clamped to
the levels, so a box covering a quarter of the image or more goes to the
coarsest level whatever the image size.

Built on `roi_align`'s public API: one RoIAlign per level over every RoI,
each RoI kept on its own level (L times the taps of a single gather; the
level-mapped gather of `multilevel_roi_align` takes only the size rule).
"""
import jax.numpy as jnp

from scnet_jax.ops.roi_align import roi_align


def ratio_roi_levels(rois, image_hw, num_levels, max_level=3):
  """Level of each RoI by its area ratio to the image.

  Args:
    rois: [B, K, 4]; image_hw: [B, 2] (resized, unpadded) image sizes.
  Returns:
    [B, K] int32 in [0, num_levels - 1].
  """
  r = rois.astype(jnp.float32)
  area = jnp.maximum((r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1]),
                     1e-6)
  hw = image_hw.astype(jnp.float32)
  image_area = (hw[:, 0] * hw[:, 1])[:, None]
  lvl = jnp.ceil(max_level - jnp.log2(image_area / area + 1e-12))
  return jnp.clip(lvl, 0, num_levels - 1).astype(jnp.int32)


def ratio_roi_align(features, rois, image_hw, output_size, strides,
                    sampling_ratio, aligned=True, max_level=3,
                    canvas_hw=None):
  """RoIAlign of rois [B, K, 4] on features (L arrays [B, H_l, W_l, C],
  strides L ints), each RoI on its ratio level -> [B, K, oh, ow, C];
  canvas_hw as roi_align's."""
  lvl = ratio_roi_levels(rois, image_hw, len(features), max_level)
  out = 0
  for i, (f, s) in enumerate(zip(features, strides)):
    part = roi_align(f, rois, output_size, 1.0 / s, sampling_ratio, aligned,
                     canvas_hw=canvas_hw)
    out = out + jnp.where((lvl == i)[..., None, None, None], part, 0)
  return out.astype(features[0].dtype)
