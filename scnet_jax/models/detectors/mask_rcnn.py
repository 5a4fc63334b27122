"""Mask R-CNN (He et al. 2017): one box stage with class-specific regression
and one 4-conv FCN mask head.

The parts are shared with the other families (two_stage.py); this family is
selected by model.family='mask_rcnn' and the switches that
config_lib.get_base('mask_rcnn') sets.
"""
from scnet_jax.models.detectors.two_stage import TwoStageDetector


class MaskRCNN(TwoStageDetector):
  """model.family='mask_rcnn'; see the module docstring."""
