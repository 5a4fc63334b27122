"""The per-device train step: written for one device's shard of the
global batch, with gradients and metrics averaged over `axis_name`."""
import jax
import jax.numpy as jnp
import optax

from scnet_jax.parallel import AXIS


def make_train_step(model, tx, axis_name=AXIS):
  """Returns step(state, batch) -> (state, metrics).

  batch: this device's [per_device, ...] arrays (see TwoStageDetector).
  metrics: dict of float32 scalars: every named loss, 'loss', 'lr'-free
    'grad_norm' and 'finite' (1.0 when every loss term and the gradient
    norm are finite).
  """

  def step(state, batch):
    rng, key = jax.random.split(jax.random.wrap_key_data(state.rng))
    per_device = batch["image"].shape[0]
    batch = dict(batch)
    batch["index"] = (jax.lax.axis_index(axis_name) * per_device +
                      jnp.arange(per_device, dtype=jnp.int32))

    def loss_fn(params):
      losses = model.apply({"params": params,
                            "batch_stats": state.batch_stats}, batch,
                           method=model.loss, rngs={"sample": key})
      return sum(losses.values()), losses

    # Each device differentiates its own loss: the parameters are cast to
    # device-varying first, so each device's gradient is its own until
    # the pmean below (without the cast, JAX would sum them itself).
    (loss, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        jax.lax.pcast(state.params, axis_name, to="varying"))
    grads = jax.lax.pmean(grads, axis_name)
    metrics = jax.lax.pmean(dict(losses, loss=loss), axis_name)
    metrics["grad_norm"] = optax.tree.norm(grads)
    # One reduction over the scalars: the gradient norm covers every
    # gradient. The loop stops at the first non-finite step and never saves
    # a state after it, so the update is not guarded here.
    finite = jnp.all(jnp.isfinite(jnp.stack(list(metrics.values()))))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state,
                              rng=jax.random.key_data(rng))
    metrics["finite"] = finite.astype(jnp.float32)
    return new_state, metrics

  return step
