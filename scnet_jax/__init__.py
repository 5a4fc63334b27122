"""scnet_jax: SCNet and the cascade family in JAX/Flax."""
from scnet_jax import ops

__version__ = "0.1.0"


def __getattr__(name):
  # Heavy imports (models, orbax) only when asked for.
  if name == "Predictor":
    from scnet_jax.predictor import Predictor
    return Predictor
  if name == "build_model":
    from scnet_jax.models import build_model
    return build_model
  raise AttributeError(f"module 'scnet_jax' has no attribute {name!r}")
