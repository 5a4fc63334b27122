"""Initialisation creates every parameter the training touches:
`training.state.init_variables` runs the predict path, and for the tiny
configs the loss path reaches exactly the same parameters and batch
statistics, with the same shapes and dtypes (both traced with
jax.eval_shape, nothing computed)."""
import jax
import pytest

from scnet_jax.models import build_model, dummy_batch
from scnet_jax.training.state import abstract_variables
from tests.helpers import tiny_config

# One tiny config per class of RoI heads, neck and mask head; the three
# left out differ from one here in fields alone (mask_rcnn is
# mask_rcnn_sfpn with the FPN, mnc has fewer rounds than mnc_5stage,
# aggmask fewer switches on than aggmask_interp).
FAMILIES = ("mask_rcnn_sfpn", "cascade_mask_rcnn", "htc", "scnet",
            "mnc_5stage", "comask", "solo", "aggmask_interp")


def _leaves(variables):
  return {jax.tree_util.keystr(path): (x.shape, x.dtype) for path, x in
          jax.tree_util.tree_leaves_with_path(variables)}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loss_path_touches_only_what_init_creates(family):
  config = tiny_config(family)
  model = build_model(config)
  rngs = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  touched = jax.eval_shape(lambda b: model.init(rngs, b, train=True),
                           dummy_batch(config, 1))
  created = abstract_variables(model, config)
  assert len(_leaves(created["params"])) > 20
  assert _leaves(touched) == _leaves(created)
