"""The MNC R-101-FPN COCO config (2 x 4096-wide stage-3 pathways, 5-stage
inference with mask voting) lowers one train step, as train.py runs it,
and one inference call, at a small bucket; abstract shapes only, so
nothing is allocated, compiled or run (the tiny MNC configs compile and
train in test_mnc.py)."""
import jax
import numpy as np

from scnet_jax import config_lib
from scnet_jax.models import build_model
from scnet_jax.training import optim
from scnet_jax.models import dummy_batch
from scnet_jax.training.state import create_state
from scnet_jax.parallel import AXIS
from scnet_jax.training.step import make_train_step

BUCKET = (256, 320)


def _abstract(tree, lead=()):
  """Shapes and dtypes of arrays, with leading dims `lead` (pmap's)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(lead + tuple(x.shape), x.dtype), tree)


def test_r101_coco_config_lowers_train_step_and_inference():
  c = config_lib.mnc_coco(depth=101, train_stages=3)
  c.data.buckets = (BUCKET,)
  c.data.image_scale = (max(BUCKET), min(BUCKET))
  model = build_model(c, axis_name=AXIS)
  batch = dummy_batch(c, 1, BUCKET)
  rngs = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  variables = jax.eval_shape(lambda b: model.init(rngs, b), batch)
  params, stats = variables["params"], variables.get("batch_stats", {})
  pathways = params["roi_heads"]["bbox_head_0"]  # the paper's 4096-wide FCs
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(pathways)) > \
      4096 * 4096 * 2
  tx = optim.make_optimizer(c, params, 100)
  state = jax.eval_shape(lambda p, s: create_state(p, s, tx, 0), params,
                         stats)
  step = jax.pmap(make_train_step(model, tx), axis_name=AXIS)
  step.lower(_abstract(state, (1,)), _abstract(batch, (1,)))

  test_batch = dummy_batch(c, 1, BUCKET, train=False)
  predict = jax.jit(lambda v, b: model.apply(v, b, method=model.predict))
  out = jax.eval_shape(predict, variables, _abstract(test_batch))
  assert out.masks.shape == (1, c.model.test.max_per_img, 28, 28)
  predict.lower(variables, _abstract(test_batch))
