"""Compile time of the SCNet R-50-FPN train step and inference (800x1216,
batch 1), and time to the first result of Mask R-CNN: ours (compile + run)
vs torchvision's first eager call. Last line: torchvision / ours for that
time to first result.

  python bench/compile.py
"""
import os
import sys
import time

import jax
import numpy as np
import optax
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import machine  # noqa: E402
from bench.models import H, W, ours_from, photo, torchvision_model  # noqa
from scnet_jax import config_lib  # noqa: E402
from scnet_jax.models import build_model  # noqa: E402
from scnet_jax.models import dummy_batch
from scnet_jax.training.state import init_variables  # noqa


def _lower_compile(fn, *args):
  t0 = time.perf_counter()
  fn.lower(*args).compile()
  return time.perf_counter() - t0


def main():
  c = config_lib.get_base("scnet")
  c.data.buckets = ((H, W),)
  model = build_model(c)
  params, stats = init_variables(model, c, 0)
  variables = {"params": params, "batch_stats": stats}
  batch = dummy_batch(c, 1)
  tx = optax.sgd(0.02, momentum=0.9)

  def train_step(params, opt_state, batch):
    def loss(p):
      return sum(model.apply({"params": p, "batch_stats": stats}, batch,
                             method=model.loss,
                             rngs={"sample": jax.random.PRNGKey(0)}).values())
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  t_train = _lower_compile(jax.jit(train_step), params, tx.init(params),
                           batch)
  t_pred = _lower_compile(jax.jit(lambda v, b: model.apply(
      v, b, method=model.predict)), variables,
                          {k: batch[k] for k in ("image", "image_hw")})
  print(f"SCNet R-50 compile, train step: {t_train:.1f} s")
  print(f"SCNet R-50 compile, inference: {t_pred:.1f} s")

  tv = torchvision_model().eval()
  _, mrcnn, mvars = ours_from(tv)
  data = {"image": photo(1), "image_hw": np.array([[H, W]], np.int32)}
  t0 = time.perf_counter()
  jax.block_until_ready(jax.jit(lambda v, b: mrcnn.apply(
      v, b, method=mrcnn.predict))(mvars, data))
  t_ours = time.perf_counter() - t0
  image = [torch.tensor(data["image"][0]).permute(2, 0, 1).float() / 255]
  t0 = time.perf_counter()
  with torch.no_grad():
    tv(image)
  t_peer = time.perf_counter() - t0
  print(f"Mask R-CNN time to first result: torchvision {t_peer:.1f} s, "
        f"ours (compile + run) {t_ours:.1f} s")
  print(f"machine: {machine()}")
  print(f"ratio: {t_peer / t_ours:.3f}")


if __name__ == "__main__":
  main()
