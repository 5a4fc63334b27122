"""Hybrid Task Cascade (Chen et al. 2019): Cascade Mask R-CNN with interleaved
box and mask branches, the mask information flow and a fused semantic
branch.

The parts are shared with the other families (two_stage.py); this family is
selected by model.family='htc' and the switches that
config_lib.get_base('htc') sets.
"""
from scnet_jax.models.detectors.two_stage import TwoStageDetector


class HTC(TwoStageDetector):
  """model.family='htc'; see the module docstring."""
