"""The semantic RoI feature of HTC / SCNet box stages (mmdet: RoIAlign at
14x14 on the stride-8 semantic map, adaptive_avg_pool2d to 7x7) against
torchvision's roi_align + avg_pool2d, for the adaptive sampling rule and
for a fixed ratio, which is computed as one 7x7 RoIAlign."""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from scnet_jax.models.roi_heads.standard import StandardRoIHeads


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_equals_torchvision_pooled(sampling_ratio):
  rng = np.random.default_rng(0)
  semantic = rng.normal(0, 1, (2, 20, 24, 8)).astype(np.float32)
  xy = rng.uniform(-10, 150, (2, 12, 2))
  wh = rng.uniform(2, 120, (2, 12, 2))
  rois = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  heads = types.SimpleNamespace(mask_roi_size=14,
                                sampling_ratio=sampling_ratio,
                                aligned=True, roi_box_grad=False)
  got = StandardRoIHeads.semantic_roi_features(heads, semantic, 8, rois, 7,
                                               None)
  want = torchvision.ops.roi_align(
      torch.from_numpy(semantic).permute(0, 3, 1, 2),
      [torch.from_numpy(r) for r in rois], 14, 1 / 8, sampling_ratio, True)
  want = F.avg_pool2d(want, 2).permute(0, 2, 3, 1).reshape(2, 12, 7, 7, 8)
  np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-4,
                             atol=1e-5)
