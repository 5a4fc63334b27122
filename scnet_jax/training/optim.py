"""The optimisers, in optax: mmdetection's SGD for every COCO config, and
AdamW (mmdet's `optim_wrapper=dict(optimizer=dict(type='AdamW'))`) for
models that learn faster with it from scratch.

SGD (momentum 0.9, PyTorch semantics: L2 weight decay added to the
gradient before momentum); AdamW (betas 0.9, 0.999, eps 1e-8, weight
decay decoupled: lr x weight_decay x param, as torch.optim.AdamW);
either at lr = base_lr * global_batch / base_batch,
linear warm-up from warmup_ratio over warmup_steps (mmdet 2.x formula),
x0.1 at the schedule's decay epochs, times a parameter's factor of
`lr_mults` (as a torch parameter group's lr: its weight decay scales
too). Frozen parameters (those the backbone's class names: ResNet's stem
and first `frozen_stages` stages) get no update, not even weight decay.
Optional gradient clipping by global norm (mmdet's grad_clip), off in the
COCO configs as in mmdetection.
"""

import flax
import jax
import jax.numpy as jnp
import optax

from scnet_jax.errors import ConfigError
from scnet_jax.models import registry, resolve_model

OPTIMIZERS = ("sgd", "adamw")
WARMUP_RULES = ("mmcv", "mmengine")


def scaled_lr(config):
  return config.base_lr * config.global_batch / config.base_batch


def lr_schedule(config, total_steps, xp=jnp):
  """step -> learning rate. Decay epochs are placed at the same fraction
  of `total_steps` as of num_epochs (exact epochs when total_steps is
  derived from the epochs). xp: jnp for the optimiser (traced), np for
  the host (the logged rate, without a trip to the device)."""
  base = scaled_lr(config)
  bounds = [round(e / config.num_epochs * total_steps)
            for e in config.lr_decay_epochs]
  # The step at which the warm-up reaches the full rate.
  full = config.warmup_steps - (config.warmup_rule == "mmengine")
  ratio = config.warmup_ratio

  def schedule(step):
    step = xp.asarray(step, xp.float32)
    factor = xp.where(step < full,
                      1.0 - (1.0 - step / max(full, 1)) * (1.0 - ratio), 1.0)
    for b in bounds:
      factor = factor * xp.where(step >= b, 0.1, 1.0)
    return base * factor
  return schedule


def frozen_labels(params, model_cfg):
  """'frozen' for the backbone's parameters that its class's
  `frozen_parameters(section)` names (e.g. ResNet's frozen_stages, as
  mmdet's), else 'trained'. A backbone class without that method freezes
  nothing."""
  b = resolve_model(model_cfg).backbone
  cls = registry.part_class(registry.BACKBONES, "backbone", b)
  pattern = (cls.frozen_parameters(b) if hasattr(cls, "frozen_parameters")
             else None)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  labels = {k: "frozen" if pattern and k.startswith("backbone/") and
            pattern.match(k[len("backbone/"):]) else "trained" for k in flat}
  return flax.traverse_util.unflatten_dict(labels, sep="/")


def lr_factors(params, lr_mults):
  """Per parameter, the factor of the longest key of `lr_mults` ((key,
  factor) pairs) that its '/'-joined path contains, else 1. A key that
  names no parameter is refused (ConfigError): a typo would train at the
  full rate unnoticed."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  pairs = sorted(((str(k), float(f)) for k, f in lr_mults),
                 key=lambda kf: -len(kf[0]))
  for key, factor in pairs:
    if factor < 0 or not any(key in path for path in flat):
      raise ConfigError(f"lr_mults: {key!r} -> {factor}: the factor must "
                        f"be >= 0 and the key part of a parameter's path "
                        f"(e.g. {next(iter(flat))!r})")
  factors = {path: next((f for key, f in pairs if key in path), 1.0)
             for path in flat}
  return flax.traverse_util.unflatten_dict(factors, sep="/")


def check_config(config):
  if config.optimizer not in OPTIMIZERS:
    raise ConfigError(f"optimizer: one of {OPTIMIZERS}, got "
                      f"{config.optimizer!r}")
  if config.warmup_rule not in WARMUP_RULES:
    raise ConfigError(f"warmup_rule: one of {WARMUP_RULES}, got "
                      f"{config.warmup_rule!r}")


def make_optimizer(config, params, total_steps):
  check_config(config)
  clip = [optax.clip_by_global_norm(config.grad_clip_norm)] \
      if config.grad_clip_norm > 0 else []
  lr = lr_schedule(config, total_steps)
  if config.optimizer == "adamw":
    update = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8,
                         weight_decay=config.weight_decay)
  else:
    update = optax.chain(optax.add_decayed_weights(config.weight_decay),
                         optax.sgd(lr, momentum=config.momentum))
  tx = optax.multi_transform(
      {"trained": optax.chain(*clip, update), "frozen": optax.set_to_zero()},
      frozen_labels(params, config.model))
  if not config.lr_mults:
    return tx
  factors = lr_factors(params, config.lr_mults)
  return optax.chain(tx, optax.stateless(
      lambda updates, _: jax.tree.map(jnp.multiply, updates, factors)))
