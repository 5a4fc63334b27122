"""XLA_FLAGS of the test processes (this one and those the tests start).

The suite compiles far more than it runs: nearly every test compiles a
train step or a predictor of its own and runs it once or twice. XLA's CPU
backend at optimisation level 0 and without its fusion emitters compiles
those programs in about half the time and runs them 2-3x slower, a trade
that pays only here (docs/testing.md has the figures). Nothing here
changes what a program computes, only how much work the compiler spends
on its machine code. Imports nothing: conftest sets XLA_FLAGS from it
before jax loads.
"""
COMPILE = ("--xla_backend_optimization_level=0 "
           "--xla_cpu_use_fusion_emitters=false")


# For the few tests that run big programs (R-50 at 800 x 800) rather than
# compile small ones: `jax.jit(..., compiler_options=RUN)` puts XLA's
# defaults back for that program alone.
RUN = {"xla_backend_optimization_level": 3,
       "xla_cpu_use_fusion_emitters": True}


def xla_flags(devices=1):
  """XLA_FLAGS for a process with `devices` host CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {COMPILE}"
