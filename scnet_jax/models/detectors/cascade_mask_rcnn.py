"""Cascade Mask R-CNN (Cai and Vasconcelos 2018): three box stages at IoU
0.5/0.6/0.7, a mask head per stage, masks averaged over stages at test time.

The parts are shared with the other families (two_stage.py); this family is
selected by model.family='cascade_mask_rcnn' and the switches that
config_lib.get_base('cascade_mask_rcnn') sets.
"""
from scnet_jax.models.detectors.two_stage import TwoStageDetector


class CascadeMaskRCNN(TwoStageDetector):
  """model.family='cascade_mask_rcnn'; see the module docstring."""
