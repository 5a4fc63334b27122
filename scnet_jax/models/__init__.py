"""Models: `build_model(config)` returns the detector that config.model
describes (`model.type`, then one registered part per section)."""
import ml_collections
import numpy as np

from scnet_jax.models.detectors.one_stage import OneStageDetector
from scnet_jax.models.detectors.two_stage import TwoStageDetector
from scnet_jax.models.detectors.base import check_dtype
from scnet_jax.models.registry import (check_fields, complete_section,
                                     part_class)
from scnet_jax.models.structures import batch_spec

DETECTORS = {"two_stage": TwoStageDetector, "one_stage": OneStageDetector}


def build_model(config, axis_name=None):
  """config: a full config (with .model) or its model section. Refuses an
  invalid combination with a ConfigError naming the field."""
  model_cfg = resolve_model(config.model if "model" in config else config)
  cls = part_class(DETECTORS, "", model_cfg)
  return cls(cfg=ml_collections.FrozenConfigDict(model_cfg),
             axis_name=axis_name)


def resolve_model(model_cfg):
  """A checked copy of the model section whose part sections hold every
  field their classes take: a field the section leaves out is added at
  the class's default, the only place a part's defaults are written (the
  fields the detector passes itself excepted). ConfigError, naming the
  field, for a config that cannot be built."""
  m = ml_collections.ConfigDict(model_cfg).copy_and_resolve_references()
  cls = part_class(DETECTORS, "", m)
  check_dtype(m)
  # What the detector injects depends on other parts' fields (e.g. the
  # neck's channels), so it is read from a draft with every default.
  draft = m.copy_and_resolve_references()
  with draft.unlocked():
    for section, reg in cls.PARTS:
      draft[section] = ml_collections.ConfigDict(
          complete_section(reg, section, m[section], set()))
  args = cls.part_arguments(draft)
  with m.unlocked():
    for section, reg in cls.PARTS:
      check_fields(reg, section, m[section], set(args[section]))
      m[section] = ml_collections.ConfigDict(complete_section(
          reg, section, m[section], set(args[section])))
  cls.check_config(m)
  return m


def resolve_config(config):
  """A copy of the full `config` with its model section resolved
  (resolve_model): the model it builds is the same; it is what
  `config.json` records and `python -m scnet_jax.summary --print_config`
  prints."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model = resolve_model(config.model)
  return config


def batch_keys(config, train):
  """The batch entries the configured model reads (structures.batch_spec
  has their shapes), from the config alone: no model is built."""
  model_cfg = resolve_model(config.model if "model" in config else config)
  return part_class(DETECTORS, "", model_cfg).batch_keys(model_cfg, train)


def dummy_batch(config, batch_size, bucket=None, train=True):
  """Zero batch of the model's training (or inference) keys, with the
  loader's shapes and dtypes (for init / tracing); image_hw is the
  bucket."""
  d = config.data
  bucket = bucket or tuple(d.buckets[0])
  spec = batch_spec(batch_keys(config, train), batch_size, bucket,
                    d.max_instances, d.mask_crop_size)
  batch = {k: np.zeros(shape, dtype) for k, (shape, dtype) in spec.items()}
  batch["image_hw"][:] = bucket
  return batch
