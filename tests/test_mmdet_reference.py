"""The mmcv._ext stand-in's RoIAlign backward equals autograd through
torchvision's RoIAlign (what bench/gpu.py's mmdetection train step uses)."""
import torch
import torchvision

from tests.mmdet_reference import mmdet_import


def test_roi_align_backward_is_torchvisions_adjoint():
  roi_align = mmdet_import("mmcv.ops").roi_align
  g = torch.Generator().manual_seed(0)
  x = torch.randn(2, 3, 12, 16, generator=g, dtype=torch.float64)
  rois = torch.tensor([[0, 1.3, 2.2, 9.5, 8.1], [1, 0.0, 0.5, 15.0, 11.0],
                       [1, 4.4, 3.3, 6.0, 5.0]], dtype=torch.float64)
  w = torch.randn(3, 3, 7, 7, generator=g, dtype=torch.float64)
  grads = []
  for fn in (lambda t: roi_align(t, rois, (7, 7), 0.5, 0, "avg", True),
             lambda t: torchvision.ops.roi_align(t, rois, (7, 7), 0.5, 0,
                                                 True)):
    t = x.clone().requires_grad_(True)
    (fn(t) * w).sum().backward()
    grads.append(t.grad)
  assert torch.allclose(grads[0], grads[1], atol=1e-12)
