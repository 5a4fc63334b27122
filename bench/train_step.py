"""One training step of Mask R-CNN R-50-FPN (forward, backward, SGD
update): ours (jit) vs torchvision's maskrcnn_resnet50_fpn, same weights,
same 800x1216 photograph and targets. Last line: torchvision / ours.

  python bench/train_step.py
"""
import os
import sys

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import report, time_call, time_jax  # noqa: E402
from bench.models import H, W, ours_from, photo, torchvision_model  # noqa
from scnet_jax.ops.mask_targets import crop_instance_mask  # noqa: E402


def targets(n=4, hw=(H, W)):
  """n box-shaped instances in an hw image (instances of 80 to 300 pixels
  at 800x1216, scaled with the image): boxes [n, 4], labels [n]
  (1-based), masks [n, h, w] uint8."""
  H, W = hw  # noqa: N806
  k = min(H / 800, W / 1216)
  rng = np.random.default_rng(0)
  boxes, masks = [], []
  for _ in range(n):
    x, y = rng.uniform(50 * k, [W - 350 * k, H - 350 * k])
    w, h = rng.uniform(80 * k, 300 * k, 2)
    boxes.append([x, y, x + w, y + h])
    m = np.zeros((H, W), np.uint8)
    m[int(y):int(y + h), int(x):int(x + w)] = 1
    masks.append(m)
  return np.asarray(boxes, np.float32), np.arange(1, n + 1), np.stack(masks)


def our_step(tv):
  """(step, (params, opt_state)) of our model for the bench's batch."""
  config, model, variables = ours_from(tv)
  boxes, labels, masks = targets()
  g = config.data.max_instances
  crops = np.zeros((1, g, 112, 112), np.uint8)
  windows = np.zeros((1, g, 4), np.float32)
  for i, (m, b) in enumerate(zip(masks, boxes)):
    crops[0, i], windows[0, i] = crop_instance_mask(m, b, 112)
  pad = lambda a, shape: np.concatenate(
      [a, np.zeros((g - len(a), *shape), a.dtype)])[None]
  batch = {"image": photo(1), "image_hw": np.array([[H, W]], np.int32),
           "gt_boxes": pad(boxes, (4,)),
           "gt_labels": pad((labels - 1).astype(np.int32), ()),
           "gt_valid": (np.arange(g) < len(boxes))[None],
           "gt_mask_crops": crops, "gt_mask_windows": windows}
  tx = optax.sgd(0.01, momentum=0.9)

  @jax.jit
  def step(params, opt_state):
    def loss(p):
      out = model.apply({"params": p, "batch_stats": variables["batch_stats"]},
                        batch, method=model.loss,
                        rngs={"sample": jax.random.PRNGKey(0)})
      return sum(out.values())
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step, (variables["params"], tx.init(variables["params"]))


def torchvision_step(tv):
  """A closure running one torchvision training step on the same data."""
  import torch
  tv.train()
  boxes, labels, masks = targets()
  opt = torch.optim.SGD([p for p in tv.parameters() if p.requires_grad],
                        lr=0.01, momentum=0.9)
  image = [torch.tensor(photo(1)[0]).permute(2, 0, 1).float() / 255]
  tgt = [{"boxes": torch.tensor(boxes), "labels": torch.tensor(labels),
          "masks": torch.tensor(masks)}]

  def step():
    opt.zero_grad()
    sum(tv(image, tgt).values()).backward()
    opt.step()
  return step


def main():
  import torch
  torch.set_num_threads(os.cpu_count())
  tv = torchvision_model()
  step, state = our_step(tv)
  first, t_ours = time_jax(step, *state, repeats=3)
  print(f"compile train step: {first - t_ours:.1f} s")
  t_peer = time_call(torchvision_step(tv), repeats=3)
  report([("mask r-cnn train step batch 1", t_peer, t_ours)],
         t_peer / t_ours)


if __name__ == "__main__":
  main()
