"""scnet_jax: SCNet and the cascade family in JAX/Flax."""
from scnet_jax import ops

__version__ = "0.1.0"
