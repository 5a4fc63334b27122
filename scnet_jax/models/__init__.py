"""Models: `build_model(config)` returns the detector that config.model
describes (`model.type`, then one registered part per section)."""
import ml_collections

from scnet_jax.models.detectors.one_stage import OneStageDetector
from scnet_jax.models.detectors.two_stage import TwoStageDetector
from scnet_jax.models.registry import part_class

DETECTORS = {"two_stage": TwoStageDetector, "one_stage": OneStageDetector}


def build_model(config, axis_name=None):
  """config: a full config (with .model) or its model section. Refuses an
  invalid combination with a ConfigError naming the field."""
  model_cfg = config.model if "model" in config else config
  cls = part_class(DETECTORS, "", model_cfg)
  cls.check_config(model_cfg)
  return cls(cfg=ml_collections.FrozenConfigDict(model_cfg),
             axis_name=axis_name)


def batch_keys(config, train):
  """The batch entries the configured model reads (structures.batch_spec
  has their shapes)."""
  return build_model(config).batch_keys(train)
