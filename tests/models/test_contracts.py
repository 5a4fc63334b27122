"""The part contracts (scnet_jax/models/contracts.py) hold at build time:
a registered class without a method of its kind's contract is refused in
one line naming the method, before anything is traced; every part we
ship meets its contract."""
import flax.linen as nn
import ml_collections
import pytest

from scnet_jax import config_lib
from scnet_jax.errors import ConfigError
from scnet_jax.models import build_model, contracts, registry

REGISTRIES = {"backbone": registry.BACKBONES, "neck": registry.NECKS,
              "rpn": registry.DENSE_HEADS, "roi_heads": registry.ROI_HEADS,
              "mask_head": registry.MASK_HEADS}


class NeckWithoutLoss(nn.Module, kw_only=True):
  """An FPN-like neck that forgot `loss` and `train_batch_keys`."""
  channels: int = 256
  strides: tuple = (4, 8, 16, 32, 64)
  dtype: object = None

  def __call__(self, c_feats, canvas=None):
    return c_feats


def test_a_part_missing_a_method_is_refused_at_build(monkeypatch):
  monkeypatch.setitem(registry.NECKS, "no_loss", NeckWithoutLoss)
  c = config_lib.get_base("mask_rcnn")
  c.model.neck = ml_collections.ConfigDict({"type": "no_loss"})
  with pytest.raises(ConfigError, match=r"^model\.neck\.type: 'no_loss' "
                     r"\(NeckWithoutLoss\) lacks loss, train_batch_keys of "
                     r"the Neck contract"):
    build_model(c)


@pytest.mark.parametrize("section", sorted(REGISTRIES))
def test_every_registered_part_meets_its_contract(section):
  assert contracts.members(contracts.CONTRACTS[section])
  for name, cls in REGISTRIES[section].items():
    assert contracts.missing_members(section, cls) == [], name
