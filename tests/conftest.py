import os
import tempfile

# 8 host devices for the data-parallel tests; must be set before jax loads.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA compilation cache for the tests and the train.py / eval.py
# processes they start (they inherit the environment): many of them
# compile the same tiny programs, which then load in a fraction of the
# compile time (programs compiled in over a second; keys hash the program
# and the compile options).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "scnet_jax_test_xla_cache"))
