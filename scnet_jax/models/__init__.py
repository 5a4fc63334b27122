"""Models: `build_model(config)` returns the detector that config.model
describes (`model.type`, then one registered part per section)."""
import ml_collections

from scnet_jax.models.detectors.one_stage import OneStageDetector
from scnet_jax.models.detectors.two_stage import TwoStageDetector
from scnet_jax.models.registry import complete_section, part_class

DETECTORS = {"two_stage": TwoStageDetector, "one_stage": OneStageDetector}


def build_model(config, axis_name=None):
  """config: a full config (with .model) or its model section. Refuses an
  invalid combination with a ConfigError naming the field."""
  model_cfg = config.model if "model" in config else config
  cls = part_class(DETECTORS, "", model_cfg)
  cls.check_config(model_cfg)
  return cls(cfg=ml_collections.FrozenConfigDict(model_cfg),
             axis_name=axis_name)


def resolve_config(config):
  """A copy of the full `config` whose part sections hold every field
  their classes take: each field the config leaves out is added at the
  class's default (the fields the detector passes itself excepted). The
  model it builds is the same; it is what `config.json` records and
  `python -m scnet_jax.inspect --print_config` prints. ConfigError for a
  config build_model refuses."""
  config = config.copy_and_resolve_references()
  m = config.model
  cls = part_class(DETECTORS, "", m)
  cls.check_config(m)
  args = cls.part_arguments(m)
  with m.unlocked():
    for section, reg in cls.PARTS:
      m[section] = ml_collections.ConfigDict(complete_section(
          reg, section, m[section], set(args[section])))
  return config


def batch_keys(config, train):
  """The batch entries the configured model reads (structures.batch_spec
  has their shapes)."""
  return build_model(config).batch_keys(train)
