"""RoIAlign's method is chosen where the program is lowered
(jax.lax.platform_dependent), not by the machine that traces it: the same
function exported (jax.export) for CPU, CUDA and TPU from this CPU machine
carries each platform's choice (docs/benchmarks.md has why)."""
import jax
import jax.numpy as jnp
import pytest

from scnet_jax import ops


def _stablehlo(fn, platform, *args):
  return jax.export.export(jax.jit(fn), platforms=[platform])(
      *args).mlir_module()


@pytest.mark.parametrize("platform", ["cpu", "cuda", "tpu"])
def test_roi_align_auto_gathers_on_cpu_and_is_dense_elsewhere(platform):
  """COCO-sized P2-P5 and the adaptive rule: the CPU cost model picks the
  gather (a while loop of gathers); GPUs and TPUs run separable matmuls."""
  feats = [jnp.zeros((1, 200 // 2 ** i, 304 // 2 ** i, 8)) for i in range(4)]
  rois = jnp.zeros((1, 16, 4))
  text = _stablehlo(lambda f, r: ops.multilevel_roi_align(
      f, r, 7, (4, 8, 16, 32), 0), platform, feats, rois)
  gathers = "stablehlo.while" in text and "stablehlo.gather" in text
  assert gathers == (platform == "cpu")
  assert ("stablehlo.dot_general" in text) == (platform != "cpu")
