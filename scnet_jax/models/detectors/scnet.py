"""SCNet (Vu, Kang and Yoo 2021): sample consistency (one mask head trained on
last-stage samples), feature relay from the box head, global context and a
semantic branch.

The parts are shared with the other families (two_stage.py); this family is
selected by model.family='scnet' and the switches that
config_lib.get_base('scnet') sets.
"""
from scnet_jax.models.detectors.two_stage import TwoStageDetector


class SCNet(TwoStageDetector):
  """model.family='scnet'; see the module docstring."""
