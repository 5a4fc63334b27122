"""training/optim.py against torch.optim: the same parameter trajectory
from the same gradients, gradient clipping, frozen stem and a parameter
group at its own learning rate (lr_mults) included."""
import flax
import numpy as np
import optax
import pytest
import torch

from scnet_jax import config_lib
from scnet_jax.errors import ConfigError
from scnet_jax.training import optim

STEPS = 5
LR = 0.05
CLIP = 1.5


# mmdet's paramwise_cfg custom_keys: a torch parameter group of its own.
NECK_MULT = 0.1


def _config(optimizer, weight_decay):
  c = config_lib.get_base("mask_rcnn")
  c.update(optimizer=optimizer, base_lr=LR, global_batch=8, base_batch=8,
           weight_decay=weight_decay, grad_clip_norm=CLIP, warmup_steps=0,
           lr_decay_epochs=(), lr_mults=(("neck/", NECK_MULT),))
  c.model.backbone.frozen_stages = 1
  return c


def _torch_run(optimizer, weight_decay, params, grads, frozen):
  tensors = {k: torch.tensor(v, requires_grad=True) for k, v in
             params.items()}
  trained = [t for k, t in tensors.items() if k not in frozen]
  groups = [{"params": [t for k, t in tensors.items()
                        if k not in frozen and not k.startswith("neck/")]},
            {"params": [t for k, t in tensors.items()
                        if k.startswith("neck/")], "lr": LR * NECK_MULT}]
  if optimizer == "sgd":
    opt = torch.optim.SGD(groups, lr=LR, momentum=0.9,
                          weight_decay=weight_decay)
  else:
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=weight_decay)
  for g in grads:
    for k, t in tensors.items():
      t.grad = torch.tensor(g[k])
    # mmdet's grad_clip: the norm over the parameters the optimiser holds.
    torch.nn.utils.clip_grad_norm_(trained, CLIP)
    opt.step()
  return {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.parametrize("optimizer,weight_decay",
                         [("sgd", 1e-4), ("adamw", 0.05)])
def test_updates_equal_torch(optimizer, weight_decay):
  rng = np.random.default_rng(0)
  shapes = {"backbone/conv1/kernel": (3, 3, 3, 4),
            "backbone/layer1_0/conv1/kernel": (3, 3, 4, 4),
            "backbone/layer2_0/conv1/kernel": (3, 3, 4, 8),
            "neck/lateral_0/bias": (8,)}
  params = {k: rng.normal(size=s).astype(np.float32)
            for k, s in shapes.items()}
  grads = [{k: rng.normal(size=s).astype(np.float32)
            for k, s in shapes.items()} for _ in range(STEPS)]
  frozen = {"backbone/conv1/kernel", "backbone/layer1_0/conv1/kernel"}

  config = _config(optimizer, weight_decay)
  nest = lambda d: flax.traverse_util.unflatten_dict(d, sep="/")
  tx = optim.make_optimizer(config, nest(params), 100)
  ours = nest(params)
  state = tx.init(ours)
  for g in grads:
    update, state = tx.update(nest(g), state, ours)
    ours = optax.apply_updates(ours, update)
  ours = flax.traverse_util.flatten_dict(ours, sep="/")

  want = _torch_run(optimizer, weight_decay, params, grads, frozen)
  # atol: Adam divides by sqrt(v), which turns float32 rounding near a
  # zero gradient into ~1e-6 of the parameter; lr x weight decay is 2.5e-3.
  for k in shapes:
    np.testing.assert_allclose(ours[k], want[k], rtol=1e-5, atol=1e-5,
                               err_msg=k)
  for k in frozen:
    np.testing.assert_array_equal(ours[k], params[k])
  assert not np.allclose(ours["neck/lateral_0/bias"],
                         params["neck/lateral_0/bias"])


def test_lr_mult_key_that_names_no_parameter_is_refused():
  c = _config("sgd", 0.0)
  c.lr_mults = (("neck/lateral_9", 0.5),)
  with pytest.raises(ConfigError, match="lr_mults"):
    optim.make_optimizer(c, {"neck": {"lateral_0": {"bias": np.zeros(2)}}},
                         10)


def test_unknown_optimizer_is_refused():
  c = _config("adam", 0.0)
  with pytest.raises(ConfigError, match="optimizer"):
    optim.make_optimizer(c, {"neck": {"bias": np.zeros(2)}}, 10)


def test_unknown_warmup_rule_is_refused():
  c = _config("sgd", 0.0)
  c.warmup_rule = "linear"
  with pytest.raises(ConfigError, match="warmup_rule"):
    optim.make_optimizer(c, {"neck": {"bias": np.zeros(2)}}, 10)


def test_mmengine_rule_equals_mmdetection3s_schedulers():
  """warmup_rule="mmengine" against the schedulers of mmdetection 3.3's
  configs run by mmengine itself: LinearLR (start_factor, by iteration,
  end = warmup_steps) then MultiStepLR x0.1 at epochs 8 and 11, here 10
  iterations an epoch; "mmcv" reaches the full rate one step later."""
  from mmengine.optim.scheduler import LinearLR, MultiStepLR
  warm, spe, epochs = 25, 10, 12
  c = config_lib.get_base("scnet")
  c.update(warmup_steps=warm, warmup_ratio=0.001, num_epochs=epochs,
           lr_decay_epochs=(8, 11), warmup_rule="mmengine")
  param = torch.zeros(1, requires_grad=True)
  sgd = torch.optim.SGD([param], lr=optim.scaled_lr(c), momentum=0.9)
  schedulers = [
      LinearLR(sgd, start_factor=0.001, by_epoch=False, begin=0, end=warm),
      MultiStepLR(sgd, milestones=[8 * spe, 11 * spe], gamma=0.1,
                  by_epoch=False, begin=0, end=epochs * spe)]
  want = []
  for _ in range(epochs * spe):
    want.append(sgd.param_groups[0]["lr"])
    sgd.step()
    for s in schedulers:
      s.step()
  schedule = optim.lr_schedule(c, epochs * spe, np)
  ours = [float(schedule(s)) for s in range(epochs * spe)]
  # Ours is float32: 1 - 0.999 at the first step keeps 5 digits.
  np.testing.assert_allclose(ours, want, rtol=3e-5)
  c.warmup_rule = "mmcv"
  mmcv = optim.lr_schedule(c, epochs * spe, np)
  assert float(mmcv(warm - 1)) < want[warm - 1] == want[warm]
  assert float(mmcv(warm)) == float(schedule(warm))
