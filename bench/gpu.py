"""Ours vs mmdetection 3.3 on the same accelerator (or CPU) and image: SCNet,
HTC, Cascade Mask R-CNN with and without the semantic branch, Mask R-CNN,
all R-50-FPN. mmdetection's models are built from the configs it ships with
random well-conditioned weights (tests/mmdet_models.py), ours
converted from the same state dict (random ones where no conversion
exists: our work is static-shape). Score threshold 0.001 on both sides, so
both keep 100 detections.

Measures: inference img/s at each --batches x --dtypes (ours; mmdetection
fp32), the SCNet train step (the library's make_train_step through
DataParallel, shard_map on one device, donated state) at --train-batches
with img/s, compile time and XLA's memory plan (compiled.memory_analysis()),
mmdetection's train step (SGD) with torch's peak CUDA memory, and a
per-stage breakdown of SCNet inference at batch 1 fp32 (differences of
jitted cumulative prefixes, as bench/inference.py), and RoIAlign's two
methods ("gather", "dense") side by side at the image size. Compilation is timed on
its own (lower + compile); steady state is the median of --iters runs after
one warm-up, with jax.block_until_ready / torch.cuda.synchronize. Jobs run
most important first and stop at --budget seconds; every result is printed
as it comes and appended to --json. Last lines: a markdown table, then
`ratio: X` = geometric mean over the inference rows with both sides of
ours img/s / mmdetection img/s (the best of our dtypes at that batch).

  python bench/gpu.py --size 256x384 --iters 2 --models scnet  # CPU check

On an nvidia-h200 device machine (torch, torchvision, jax, flax, optax are
there; mmdet, mmengine, mmcv-lite and their missing needs are carried as
wheels). Once, in the repo root the device tool sends:
  echo /.whl/ >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
    --implementation cp --platform manylinux_2_28_x86_64 \\
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \\
    mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0 ml_collections==1.1.0 \\
    addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9 termcolor==3.3.0 \\
    terminaltables==3.1.10 pycocotools==2.0.11 shapely==2.2.0
Then the device run: command `bash bench/gpu_run.sh 480`, carry [".whl"],
timeout_s 600. The script installs the wheels offline,
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
and writes $OUT/gpu.log and $OUT/gpu.json (one JSON row a result). Extra
arguments go to this script, e.g. `bash bench/gpu_run.sh 420 --models
scnet,cascade_semantic` for a partial run.
"""
import argparse
import json
import math
import os
import sys
import time

# JAX and torch share the device: JAX takes a fixed part, torch the rest.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.55")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import machine, time_call, time_jax  # noqa: E402
from bench.models import photo  # noqa: E402
from bench.train_step import targets  # noqa: E402
from scnet_jax import config_lib, ops  # noqa: E402
from scnet_jax.convert.core import convert_state_dict  # noqa: E402
from scnet_jax.data.transforms import thing_semantic_map  # noqa: E402
from scnet_jax.models import build_model, resolve_model  # noqa: E402
from scnet_jax.ops.mask_targets import crop_instance_mask  # noqa: E402
from scnet_jax.parallel import DataParallel  # noqa: E402
from scnet_jax.training import optim  # noqa: E402
from scnet_jax.models import dummy_batch
from scnet_jax.training.state import create_state  # noqa
from scnet_jax.training.step import make_train_step  # noqa: E402

SCORE_THR = 0.001
# name: (our family, our config fields, mmdet family, mmdet roi_head fields)
MODELS = {
    "scnet": ("scnet", {}, "scnet", {}),
    "htc": ("htc", {"roi_heads.test_mask_merge": "last_stage"}, "htc", {}),
    # mmdetection has no such config: HTC without its interleaving and mask
    # information flow is Cascade Mask R-CNN with the fused semantic branch.
    "cascade_semantic": ("cascade_mask_rcnn", {"roi_heads.semantic": True},
                         "htc", {"interleaved": False,
                                 "mask_info_flow": False}),
    "cascade": ("cascade_mask_rcnn", {}, "cascade_mask_rcnn", {}),
    "mask_rcnn": ("mask_rcnn", {}, "mask_rcnn", {}),
}
RESULTS = []


def log(**row):
  RESULTS.append(row)
  print("RESULT " + json.dumps(row), flush=True)
  if ARGS.json:
    with open(ARGS.json, "a") as f:
      f.write(json.dumps(row) + "\n")


# ------------------------------------------------------------ mmdetection
def torch_device():
  import torch
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync():
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def mmdet_data(model, images, gt=None):
  """Preprocessed (inputs, samples) of [B, H, W, 3] RGB images, on the
  model's device; gt: (boxes, labels 0-based, masks, semantic map)."""
  import torch
  from mmdet.structures import DetDataSample
  from mmdet.structures.mask import BitmapMasks
  from mmengine.structures import InstanceData, PixelData
  h, w = images.shape[1:3]
  samples = []
  for i in range(len(images)):
    s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                    scale_factor=(1.0, 1.0), img_id=i))
    if gt is not None:
      boxes, labels, masks, sem = gt
      s.gt_instances = InstanceData(
          bboxes=torch.tensor(boxes), labels=torch.tensor(labels),
          masks=BitmapMasks(masks, h, w))
      s.gt_sem_seg = PixelData(sem_seg=torch.tensor(sem[None]).long())
    samples.append(s)
  bgr = [torch.from_numpy(im[:, :, ::-1].copy()).permute(2, 0, 1)
         for im in images]
  data = model.data_preprocessor({"inputs": bgr, "data_samples": samples},
                                 gt is not None)
  return data["inputs"], data["data_samples"]


def mmdet_model(name, hw):
  """(mmdet model on the torch device, its numpy state dict)."""
  import torch
  from tests.mmdet_models import CONFIGS, condition, mmdet_config
  _, _, family, fields = MODELS[name]
  cfg = mmdet_config(CONFIGS[family])
  from mmdet.registry import MODELS as REG
  cfg.model.backbone.init_cfg = None
  cfg.model.test_cfg.rcnn.score_thr = SCORE_THR
  for k, v in fields.items():
    cfg.model.roi_head[k] = v
  torch.manual_seed(0)
  model = REG.build(cfg.model).eval()
  # Conditioned on the CPU (its weights come from a CPU generator).
  condition(model, *mmdet_data(model, photo(1, hw)), seed=1)
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return model.to(torch_device()), state


def mmdet_infer(model, batch, hw):
  import torch
  inputs, samples = mmdet_data(model, photo(batch, hw))

  def run():
    with torch.no_grad():
      out = model.predict(inputs, samples, rescale=True)
    sync()
    return out
  t = time_call(run, repeats=ARGS.iters)
  return t, len(run()[0].pred_instances.scores)


def mmdet_stages(model, hw):
  import torch
  inputs, samples = mmdet_data(model, photo(1, hw))
  with torch.no_grad():
    def feats():
      out = model.extract_feat(inputs)
      sync()
      return out
    x = feats()

    def rpn():
      out = model.rpn_head.predict(x, samples, rescale=False)
      sync()
      return out
    props = rpn()

    def heads():
      out = model.roi_head.predict(x, props, samples, rescale=True)
      sync()
      return out
    return [time_call(f, repeats=ARGS.iters) for f in (feats, rpn, heads)]


def mmdet_train(model, batch, hw, gt):
  import torch
  model.train()
  inputs, samples = mmdet_data(model, photo(batch, hw), gt)
  opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                        lr=0.02, momentum=0.9, weight_decay=1e-4)

  def step():
    opt.zero_grad()
    loss, _ = model.parse_losses(model.loss(inputs, samples))
    loss.backward()
    opt.step()
    sync()
  if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()
  t = time_call(step, repeats=ARGS.iters)
  peak = (torch.cuda.max_memory_allocated() / 2**30
          if torch.cuda.is_available() else None)
  model.eval()
  return t, peak


# -------------------------------------------------------------------- ours
def our_config(name, hw, dtype):
  family, fields, _, _ = MODELS[name]
  c = config_lib.get_base(family)
  for key, value in fields.items():
    section, field = key.split(".")
    c.model[section][field] = value
  c.model.dtype = dtype
  c.model.test.score_thr = SCORE_THR
  c.data.buckets = (hw,)
  c.data.max_instances = 8
  c.parallel = "shard_map"
  return c


def our_variables(c, state):
  """Variables of config c converted from mmdet's state dict; random ones
  (with a note) where the layouts differ."""
  model = build_model(c)
  rngs = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  init = lambda b: model.init(rngs, b)
  small = dummy_batch(c, 1, (64, 64))
  if state is not None:
    shapes = jax.eval_shape(init, small)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    try:
      return convert_state_dict(state, "mmdet", dict(zeros))[0], "converted"
    except Exception as e:  # noqa: BLE001  (reported, then random)
      print(f"note: {c.model_name}: random weights, no conversion: "
            f"{str(e)[:200]}")
  v = jax.jit(init)(small)
  return {"params": v["params"], "batch_stats": v["batch_stats"]}, "random"


def compile_and_time(fn, *args):
  """(compile s, median s, compiled) of jax.jit(fn) on args."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  t_compile = time.perf_counter() - t0
  _, t = time_jax(compiled, *args, repeats=ARGS.iters)
  return t_compile, t, compiled


def image_batch(batch, hw):
  return jax.device_put({"image": photo(batch, hw),
                         "image_hw": np.tile([hw], (batch, 1)).astype(
                             np.int32)})


def our_infer(name, hw, dtype, batch, variables):
  c = our_config(name, hw, dtype)
  model = build_model(c)
  data = image_batch(batch, hw)
  fn = lambda v, b: model.apply(v, b, method=model.predict)
  t_c, t, compiled = compile_and_time(fn, variables, data)
  dets = int(compiled(variables, data).num_detections[0])
  return t_c, t, dets


def our_stages(name, hw, variables):
  """Cumulative prefixes of predict (batch 1, fp32): names and seconds."""
  c = our_config(name, hw, "float32")
  model = build_model(c)
  data = image_batch(1, hw)

  def to_context(m, b):
    f, canvas = m.neck_and_canvas(b["image"], b["image_hw"])
    p = m.rpn_head.proposals(f, canvas)
    return f, p, m.roi_heads.context_and_losses(f, canvas)[0]

  def boxes(k):
    def fn(m, b):
      f, p, ctx = to_context(m, b)
      rh, rois, out = m.roi_heads, p.boxes, []
      for s in range(k):
        cls, deltas, _ = rh.box_forward(s, f, rois, ctx)
        out.append(cls)
        if s < rh.num_stages - 1:
          rois = ops.decode_deltas(rois, deltas,
                                   stds=rh.stage_target_stds[s],
                                   image_hw=b["image_hw"],
                                   clamp=rh.delta_clamp)
      return rois, out
    return fn

  prefixes = [("backbone + FPN",
               lambda m, b: m.neck_and_canvas(b["image"], b["image_hw"])),
              ("RPN + proposals", lambda m, b: to_context(m, b)[:2]),
              ("semantic / global context", to_context)]
  n = len(resolve_model(c.model).roi_heads.get("stage_iou_thrs", (0,)))
  prefixes += [(f"box stage {k}", boxes(k)) for k in range(1, n + 1)]
  prefixes += [("detect + mask (+ relay)",
                lambda m, b: m.predict(b))]
  out, before = [], 0.0
  for label, prefix in prefixes:
    fn = lambda v, b, p=prefix: model.apply(v, b, method=p)
    _, t, _ = compile_and_time(fn, variables, data)
    out.append((label, t - before))
    before = t
  return out


def train_data(c, batch, hw):
  """Our train batch and mmdet's gt: the same photograph and instances."""
  boxes, labels, masks = targets(4, hw)
  labels = labels - 1
  sem = thing_semantic_map(masks, labels, c.model.num_classes)
  b = dummy_batch(c, batch, hw)
  b["image"][:] = photo(batch, hw)
  g, r = c.data.max_instances, c.data.mask_crop_size
  for i, (m, box) in enumerate(zip(masks, boxes)):
    b["gt_mask_crops"][:, i], b["gt_mask_windows"][:, i] = \
        crop_instance_mask(m, box, r)
  b["gt_boxes"][:, :len(boxes)] = boxes
  b["gt_labels"][:, :len(boxes)] = labels
  b["gt_valid"][:] = np.arange(g) < len(boxes)
  if "gt_semantic" in b:
    b["gt_semantic"][:] = sem[::8, ::8]
  return b, (boxes, labels, masks, sem)


def our_train(name, hw, dtype, batch, variables):
  c = our_config(name, hw, dtype)
  model = build_model(c)
  tx = optim.make_optimizer(c, variables["params"], 1000)
  state = create_state(variables["params"], variables["batch_stats"], tx, 0)
  dp = DataParallel("shard_map", make_train_step(model, tx),
                    devices=jax.devices()[:1])
  b, _ = train_data(c, batch, hw)
  data = dp.put_batch({k: b[k] for k in model.batch_keys(train=True)})
  state = dp.put_replicated(state)
  t0 = time.perf_counter()
  compiled = dp.fn.lower(state, data).compile()
  t_compile = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  plan = None if mem is None else (
      mem.argument_size_in_bytes + mem.output_size_in_bytes +
      mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2**30
  holder = [state]

  def step():  # the state is donated: each step feeds the next
    holder[0], metrics = compiled(holder[0], data)
    return metrics
  _, t = time_jax(step, repeats=ARGS.iters)
  loss = float(jax.device_get(step()["loss"]))
  return t_compile, t, plan, loss


# -------------------------------------------------------------------- main
def roi_align_methods(hw, channels=256, num_rois=1000):
  """RoIAlign's two methods side by side on this device, at the image size
  (random maps and RoIs): the box (7x7) and mask (14x14) RoIAlign over
  P2-P5 and the semantic one (14x14 on the stride-8 map), adaptive
  sampling, forward and forward + backward. Yields (case, method,
  compile_s, s)."""
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  h, w = hw
  levels = [jnp.asarray(rng.normal(size=(1, h // s, w // s, channels)),
                        jnp.float32) for s in (4, 8, 16, 32)]
  xy = rng.uniform(0, [w - 50, h - 50], size=(1, num_rois, 2))
  wh = np.exp(rng.uniform(np.log(16), np.log(600), size=(1, num_rois, 2)))
  rois = jnp.asarray(np.concatenate([xy, np.minimum(xy + wh, [w, h])], -1),
                     jnp.float32)
  cases = {
      "P2-P5 7x7": lambda f, r, m: ops.multilevel_roi_align(
          f, r, 7, (4, 8, 16, 32), 0, method=m),
      "P2-P5 14x14": lambda f, r, m: ops.multilevel_roi_align(
          f, r, 14, (4, 8, 16, 32), 0, method=m),
      "semantic 14x14": lambda f, r, m: ops.roi_align(
          f[1], r, 14, 1 / 8, 0, method=m)}
  for case, fn in cases.items():
    for method in ("gather", "dense"):
      fwd = jax.jit(lambda f, r, fn=fn, m=method: fn(f, r, m))
      both = jax.jit(jax.grad(lambda f, r, fn=fn, m=method: jnp.sum(
          fn(f, r, m) ** 2)))
      for label, g in (("fwd", fwd), ("fwd+bwd", both)):
        compile_s, t = time_jax(g, levels, rois, repeats=ARGS.iters)
        yield f"{case} {label}", method, compile_s, t


def main():
  global ARGS
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--batches", default="1,8")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--train-batches", default="2,8")
  p.add_argument("--train-dtypes", default="float32,bfloat16")
  p.add_argument("--size", default="800x1216")
  p.add_argument("--iters", type=int, default=15)
  p.add_argument("--budget", type=float, default=math.inf,
                 help="seconds; no job starts after it")
  p.add_argument("--skip-mmdet", action="store_true")
  p.add_argument("--skip-train", action="store_true")
  p.add_argument("--skip-stages", action="store_true")
  p.add_argument("--json", default="")
  ARGS = p.parse_args()
  start = time.perf_counter()
  hw = tuple(int(x) for x in ARGS.size.split("x"))
  names = ARGS.models.split(",")
  batches = [int(x) for x in ARGS.batches.split(",")]
  dtypes = ARGS.dtypes.split(",")
  print(f"machine: {machine()}; size {hw}; iters {ARGS.iters}", flush=True)
  if not ARGS.skip_mmdet:
    import torch
    print(f"torch {torch.__version__} on {torch_device()}", flush=True)

  cache = {}

  def models(name):
    if name not in cache:
      ref, state = (None, None) if ARGS.skip_mmdet else mmdet_model(name,
                                                                    hw)
      variables, how = our_variables(our_config(name, hw, "float32"), state)
      print(f"{name}: our weights {how}", flush=True)
      cache[name] = ref, variables
    return cache[name]

  jobs = []  # (priority, description, thunk)

  def infer_jobs(name):
    for b in batches:
      for dt in dtypes:
        pr = 0 if (b, dt) == (batches[0], dtypes[0]) else (
            1 if b == batches[-1] else 4)
        jobs.append((pr, f"ours {name} {dt} b{b}",
                     lambda n=name, b=b, dt=dt: log(
                         kind="infer", model=n, side="ours", dtype=dt,
                         batch=b, **dict(zip(
                             ("compile_s", "s", "dets"),
                             our_infer(n, hw, dt, b, models(n)[1]))))))
      if not ARGS.skip_mmdet:
        jobs.append((0 if b == batches[0] else 1, f"mmdet {name} b{b}",
                     lambda n=name, b=b: log(
                         kind="infer", model=n, side="mmdet",
                         dtype="float32", batch=b, **dict(zip(
                             ("s", "dets"),
                             mmdet_infer(models(n)[0], b, hw))))))

  for name in names:
    infer_jobs(name)

  def roi_align_jobs():
    for case, method, compile_s, t in roi_align_methods(hw):
      log(kind="roi_align", case=case, method=method, compile_s=compile_s,
          s=t)
  jobs.append((1, "RoIAlign gather vs dense", roi_align_jobs))
  if not ARGS.skip_train and "scnet" in names:
    c = our_config("scnet", hw, "float32")
    for b in [int(x) for x in ARGS.train_batches.split(",")]:
      for dt in ARGS.train_dtypes.split(","):
        jobs.append((2, f"ours train scnet {dt} b{b}",
                     lambda b=b, dt=dt: log(
                         kind="train", model="scnet", side="ours", dtype=dt,
                         batch=b, **dict(zip(
                             ("compile_s", "s", "plan_gib", "loss"),
                             our_train("scnet", hw, dt, b,
                                       models("scnet")[1]))))))
      if not ARGS.skip_mmdet:
        jobs.append((2, f"mmdet train scnet b{b}",
                     lambda b=b: log(
                         kind="train", model="scnet", side="mmdet",
                         dtype="float32", batch=b, **dict(zip(
                             ("s", "peak_gib"), mmdet_train(
                                 models("scnet")[0], b, hw,
                                 train_data(c, b, hw)[1]))))))
  if not ARGS.skip_stages and "scnet" in names:
    def stages():
      for label, t in our_stages("scnet", hw, models("scnet")[1]):
        log(kind="stage", model="scnet", side="ours", stage=label, s=t)
      if not ARGS.skip_mmdet:
        for label, t in zip(("backbone + FPN", "RPN + proposals",
                             "RoI heads (all, + mask paste)"),
                            mmdet_stages(models("scnet")[0], hw)):
          log(kind="stage", model="scnet", side="mmdet", stage=label, s=t)
    jobs.append((3, "stages scnet", stages))

  for _, what, job in sorted(jobs, key=lambda j: j[0]):
    elapsed = time.perf_counter() - start
    if elapsed > ARGS.budget:
      print(f"skipped (budget {ARGS.budget:.0f} s): {what}", flush=True)
      continue
    print(f"[{elapsed:6.0f} s] {what}", flush=True)
    try:
      job()
    except Exception as e:  # noqa: BLE001  (one failure must not end it)
      print(f"FAILED {what}: {type(e).__name__}: {str(e)[:300]}",
            flush=True)
  summary(batches)


def summary(batches):
  print(f"\nmachine: {machine()}; size {ARGS.size}\n")
  print("| model | side | dtype | batch | compile s | ms | img/s | dets |")
  print("|---|---|---|---|---|---|---|---|")
  ratios = []
  inf = [r for r in RESULTS if r["kind"] == "infer"]
  for r in inf:
    print(f"| {r['model']} | {r['side']} | {r['dtype']} | {r['batch']} | "
          f"{r.get('compile_s', 0):.1f} | {r['s'] * 1e3:.1f} | "
          f"{r['batch'] / r['s']:.1f} | {r['dets']} |")
  for name in MODELS:
    for b in batches:
      ours = [r["s"] for r in inf if r["model"] == name and
              r["batch"] == b and r["side"] == "ours"]
      peer = [r["s"] for r in inf if r["model"] == name and
              r["batch"] == b and r["side"] == "mmdet"]
      if ours and peer:
        ratios.append(peer[0] / min(ours))
  train = [r for r in RESULTS if r["kind"] == "train"]
  if train:
    print("\n| train step | side | dtype | batch | compile s | ms | img/s | "
          "memory GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in train:
      mem = r.get("plan_gib", r.get("peak_gib"))
      kind = "XLA plan" if "plan_gib" in r else "torch peak"
      print(f"| scnet | {r['side']} | {r['dtype']} | {r['batch']} | "
            f"{r.get('compile_s', 0):.1f} | {r['s'] * 1e3:.1f} | "
            f"{r['batch'] / r['s']:.2f} | "
            f"{'-' if mem is None else f'{mem:.2f} ({kind})'} |")
  stages = [r for r in RESULTS if r["kind"] == "stage"]
  if stages:
    print("\n| SCNet b1 fp32 stage | side | ms |\n|---|---|---|")
    for r in stages:
      print(f"| {r['stage']} | {r['side']} | {r['s'] * 1e3:.2f} |")
  ratio = math.exp(np.mean(np.log(ratios))) if ratios else float("nan")
  print(f"\n(ratio: geometric mean over {len(ratios)} model x batch rows of "
        "ours img/s (best dtype) / mmdetection fp32 img/s)")
  print(f"ratio: {ratio:.3f}")


ARGS = None

if __name__ == "__main__":
  main()
