"""RoIAlign and NMS: ours (jitted) vs torchvision.ops on the same inputs.

RoIAlign: 1000 RoIs, 256 channels, P2..P5 of an 800x1216 image, outputs
7x7 and 14x14, sampling ratio 2 and 0 (mmdet's adaptive rule), aligned;
the adaptive rule also on the stride-8 semantic map at 14x14 (SCNet's
semantic RoI feature), and its feature gradient. The adaptive rows also
time the previous kernel's capped formula (at most 4x4 samples per bin,
wrong past that) against today's exact one; on the tiny configs' small
maps, the gather method against the one "auto" picks. NMS: 2000 and 20000
boxes.
The last line is the geometric mean of torchvision time / our time.

  python bench/ops.py
"""
import contextlib
import importlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import report, time_call, time_jax  # noqa: E402
from scnet_jax import ops  # noqa: E402
# The module itself: scnet_jax.ops re-exports the function under its name.
roi_align_lib = importlib.import_module("scnet_jax.ops.roi_align")

CAP = 4


def _capped_flat(flat, rois, scale, height, width, offset, output_size,
                 sampling_ratio, aligned, roi_grad=False, extent=None,
                 tile=None):
  """The capped adaptive formula this repository used before: min(ceil(roi /
  out), 4) samples per bin axis, 4 taps each, as one static gather."""
  del sampling_ratio, roi_grad, tile
  extent = (height, width) if extent is None else extent
  oh, ow = output_size
  _, _, rw, rh = roi_align_lib._roi_frames(rois, scale, aligned, False,
                                           jnp.float32)
  grid = lambda length, n: jnp.minimum(jnp.ceil(length / n), CAP).astype(
      jnp.int32)
  out = roi_align_lib._sample_gather(
      flat, rois, scale, width, offset, extent, output_size, grid(rh, oh),
      grid(rw, ow), CAP, aligned, False)
  return out.astype(flat.dtype)


@contextlib.contextmanager
def capped():
  exact = roi_align_lib._roi_align_flat
  roi_align_lib._roi_align_flat = _capped_flat
  try:
    yield
  finally:
    roi_align_lib._roi_align_flat = exact


def _needs(rois, strides, size):
  """Samples per bin axis the adaptive rule asks for, at each RoI's level."""
  lvl = np.asarray(ops.map_roi_levels(jnp.asarray(rois), len(strides)))
  scale = 1.0 / np.asarray(strides, np.float64)[lvl]
  wh = (rois[:, 2:] - rois[:, :2]) * scale[:, None]
  return np.ceil(wh / size).max(axis=1)


def _small_map_rows(rng):
  """The tiny configs' RoIAlign (128 px image: P2-P5 of 32..4 px, 8 images
  x 32 RoIs, 64 channels, sampling ratio 2), forward+backward: the gather
  method (peer) against what "auto" picks there."""
  strides, b, k, c = (4, 8, 16, 32), 8, 32, 64
  feats = [jnp.asarray(rng.normal(size=(b, 128 // s, 128 // s, c)),
                       jnp.float32) for s in strides]
  xy = rng.uniform(0, 100, size=(b, k, 2))
  wh = rng.uniform(4, 90, size=(b, k, 2))
  rois = jnp.asarray(np.concatenate([xy, np.minimum(xy + wh, 128)], -1),
                     jnp.float32)
  rows = []
  for size in (7, 14):
    auto = roi_align_lib._pick_method(
        "auto", [f.shape[1:3] for f in feats], (size, size), 2,
        roi_align_lib._level_tile((size, size), strides, 56))
    times = {}
    for method in ("gather", "auto"):
      grad = jax.jit(jax.grad(lambda fs, m=method, size=size: jnp.sum(
          ops.multilevel_roi_align(fs, rois, size, strides, 2,
                                   method=m) ** 2)))
      times[method] = time_jax(grad, feats)[1]
    picked = "gather on CPU, dense elsewhere" if auto == "auto" else auto
    rows.append((f"128 px {size}x{size} sr=2 fwd+bwd: gather (peer) vs "
                 f"auto ({picked})", times["gather"], times["auto"]))
  return rows


def main():
  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)
  h, w, c = 800, 1216, 256
  strides = (4, 8, 16, 32)
  feats = [rng.normal(size=(h // s, w // s, c)).astype(np.float32)
           for s in strides]
  semantic = rng.normal(size=(h // 8, w // 8, c)).astype(np.float32)
  xy = rng.uniform(0, [w - 50, h - 50], size=(1000, 2))
  wh = np.exp(rng.uniform(np.log(16), np.log(600), size=(1000, 2)))
  rois = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(
      np.float32)
  pooler_feats = {str(i): torch.tensor(f).permute(2, 0, 1)[None]
                  for i, f in enumerate(feats)}
  t_rois = [torch.tensor(rois)]
  t_sem = torch.tensor(semantic).permute(2, 0, 1)[None]
  rows, side_rows, compile_rows = [], [], []
  for sr in (2, 0):
    for size in (7, 14):
      ours = jax.jit(lambda fs, r, size=size, sr=sr: ops.multilevel_roi_align(
          fs, r, size, strides, sr, True))
      first, t_ours = time_jax(ours, feats, rois)
      pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], size,
                                                  sr)
      # Same level rule (torchvision's), aligned=False there: compare cost.
      t_peer = time_call(lambda: pooler(pooler_feats, t_rois, [(h, w)]))
      name = f"roi_align {size}x{size} sr={sr} 1000 RoIs P2-P5"
      rows.append((name, t_peer, t_ours))
      compile_rows.append((f"roi_align {size} sr={sr}", first - t_ours))
      if sr == 0:
        with capped():
          old = jax.jit(lambda fs, r, size=size: ops.multilevel_roi_align(
              fs, r, size, strides, 0, True))
          _, t_old = time_jax(old, feats, rois)
        side_rows.append((f"{size}x{size} sr=0: capped (peer) vs exact",
                          t_old, t_ours))
  ours = jax.jit(lambda s, r: ops.roi_align(s, r, 14, 0.125, 0, True))
  first, t_ours = time_jax(ours, semantic, rois)
  t_peer = time_call(lambda: torchvision.ops.roi_align(
      t_sem, t_rois, 14, 0.125, 0, True))
  rows.append(("roi_align semantic 14x14 sr=0 stride 8", t_peer, t_ours))
  compile_rows.append(("roi_align semantic", first - t_ours))
  with capped():
    old = jax.jit(lambda s, r: ops.roi_align(s, r, 14, 0.125, 0, True))
    _, t_old = time_jax(old, semantic, rois)
  side_rows.append(("semantic sr=0: capped (peer) vs exact", t_old, t_ours))
  cot = rng.normal(size=(1000, 7, 7, c)).astype(np.float32)
  loss = lambda fs, r: jnp.sum(ops.multilevel_roi_align(
      fs, r, 7, strides, 0, True) * cot)
  ours = jax.jit(jax.grad(loss))
  _, t_ours = time_jax(ours, feats, rois)
  tf = {k: v.clone().requires_grad_() for k, v in pooler_feats.items()}
  pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0)
  t_cot = torch.tensor(cot).permute(0, 3, 1, 2)
  def peer_grad():
    for v in tf.values():
      v.grad = None
    (pooler(tf, t_rois, [(h, w)]) * t_cot).sum().backward()
  t_peer = time_call(peer_grad)
  rows.append(("roi_align 7x7 sr=0 forward+backward", t_peer, t_ours))
  with capped():
    old = jax.jit(jax.grad(loss))
    _, t_old = time_jax(old, feats, rois)
  side_rows.append(("7x7 sr=0 fwd+bwd: capped (peer) vs exact", t_old,
                    t_ours))
  side_rows += _small_map_rows(rng)
  for n in (2000, 20000):
    xy = rng.uniform(0, 1000, size=(n, 2))
    wh = rng.uniform(10, 120, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(size=n).astype(np.float32)
    ours = jax.jit(lambda b, s: ops.nms(b, s, 0.7, n))
    first, t_ours = time_jax(ours, boxes, scores)
    tb, ts = torch.tensor(boxes), torch.tensor(scores)
    t_peer = time_call(lambda: torchvision.ops.nms(tb, ts, 0.7))
    rows.append((f"nms {n} boxes", t_peer, t_ours))
    compile_rows.append((f"nms {n}", first - t_ours))
  for size in (7, 14):
    need = _needs(rois, strides, size)
    print(f"adaptive {size}x{size}: samples per bin axis needed: max "
          f"{need.max():.0f}, > {CAP} for {np.sum(need > CAP)} of 1000 RoIs")
  need = np.ceil((rois[:, 2:] - rois[:, :2]).max(axis=1) / 8 / 14)
  print(f"adaptive semantic: max {need.max():.0f}, > {CAP} for "
        f"{np.sum(need > CAP)} of 1000 RoIs")
  for name, s in compile_rows:
    print(f"compile {name}: {s:.2f} s")
  for name, old, new in side_rows:
    print(f"{name}: {old * 1e3:.1f} ms vs {new * 1e3:.1f} ms "
          f"({old / new:.2f}x)")
  ratio = float(np.exp(np.mean([np.log(p / o) for _, p, o in rows])))
  report(rows, ratio)


if __name__ == "__main__":
  main()
