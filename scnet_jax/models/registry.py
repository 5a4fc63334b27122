"""Registries of model parts: the config's `type` name -> class.

A detector's config has one section per part (`model.backbone`,
`model.neck`, `model.rpn`, `model.roi_heads`; a one-stage model's
`model.mask_head`), each with a `type` and the
keyword arguments of that class; the detector adds what it knows
(channels, strides, class count, dtype, ...). A new part is a new file and
one line here.
"""
import dataclasses

from scnet_jax.errors import ConfigError
from scnet_jax.models import contracts
from scnet_jax.models.backbones.resnet import ResNet
from scnet_jax.models.dense_heads.aggmask_head import AggMaskHead
from scnet_jax.models.dense_heads.rpn_head import RPNHead
from scnet_jax.models.dense_heads.solo_head import SOLOHead
from scnet_jax.models.necks.fpn import FPN
from scnet_jax.models.necks.msfem import MSFEM
from scnet_jax.models.necks.sfpn import SFPN
from scnet_jax.models.roi_heads.cascade import CascadeRoIHeads
from scnet_jax.models.roi_heads.comask import CoMaskRoIHeads
from scnet_jax.models.roi_heads.htc import HTCRoIHeads
from scnet_jax.models.roi_heads.mnc import MNCRoIHeads
from scnet_jax.models.roi_heads.scnet import SCNetRoIHeads
from scnet_jax.models.roi_heads.standard import StandardRoIHeads

BACKBONES = {"resnet": ResNet}
NECKS = {"fpn": FPN, "msfem": MSFEM, "sfpn": SFPN}
DENSE_HEADS = {"rpn": RPNHead}
MASK_HEADS = {"solo": SOLOHead, "aggmask": AggMaskHead}
ROI_HEADS = {"standard": StandardRoIHeads, "cascade": CascadeRoIHeads,
             "htc": HTCRoIHeads, "scnet": SCNetRoIHeads, "mnc": MNCRoIHeads,
             "comask": CoMaskRoIHeads}


def part_class(registry, section, cfg):
  """The class that config section `model.<section>` names."""
  name = cfg.get("type")
  if name not in registry:
    field = f"model.{section}.type" if section else "model.type"
    raise ConfigError(f"{field}: unknown {name!r}; one of "
                      f"{sorted(registry)}")
  return registry[name]


def class_defaults(cls):
  """{field: default} of every field of a part's class that has one."""
  out = {}
  for f in dataclasses.fields(cls):
    if f.name in ("parent", "name"):
      continue
    if f.default is not dataclasses.MISSING:
      out[f.name] = f.default
    elif f.default_factory is not dataclasses.MISSING:
      out[f.name] = f.default_factory()
  return out


def check_fields(registry, section, cfg, injected):
  """Refuses an unknown type, fields the class does not take, fields the
  detector sets itself (`injected`) and a class without the methods of its
  kind's contract (models/contracts.py)."""
  cls = part_class(registry, section, cfg)
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  given = set(cfg.keys()) - {"type"}
  unknown = sorted(given - fields)
  if unknown:
    raise ConfigError(f"model.{section}: {cfg.type!r} takes no field "
                      f"{unknown[0]!r}; it takes {sorted(fields - injected)}")
  clash = sorted(given & injected)
  if clash:
    raise ConfigError(f"model.{section}.{clash[0]}: set by the detector, "
                      f"not the config")
  missing = contracts.missing_members(section, cls)
  if missing:
    raise ConfigError(
        f"model.{section}.type: {cfg.type!r} ({cls.__name__}) lacks "
        f"{', '.join(missing)} of the {contracts.CONTRACTS[section].__name__}"
        f" contract (scnet_jax/models/contracts.py)")


def complete_section(registry, section, cfg, injected):
  """cfg's fields plus every other field the part's class takes, at the
  class's default (the one place a part's defaults are written); the
  detector's own arguments (`injected`) left out."""
  cls = part_class(registry, section, cfg)
  full = {"type": cfg.type}
  for name, default in class_defaults(cls).items():
    if name not in injected:
      full[name] = default
  full.update((k, v) for k, v in cfg.items() if k != "type")
  return full


def build_part(registry, section, cfg, **injected):
  """An instance of the part, from its config section plus `injected`."""
  cls = part_class(registry, section, cfg)
  return cls(**{k: v for k, v in cfg.items() if k != "type"}, **injected)
