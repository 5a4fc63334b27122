"""mmdetection 3.3's two-stage models as test references: built from the
configs it ships, with random weights made well-conditioned on a
photograph, and our model converted from the same state dict.

Used by tests/models/test_mmdet_parity.py (inference and training, the
latter through tests/mmdet_training.py) and bench/gpu.py.
"""
import functools
import os

import jax
import numpy as np
import torch

from scnet_jax import config_lib
from scnet_jax.convert.core import convert_state_dict
from scnet_jax.models import build_model, dummy_batch

CONFIGS = {"mask_rcnn": "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
           "cascade_mask_rcnn":
               "cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py",
           "htc": "htc/htc_r50_fpn_1x_coco.py",
           "scnet": "scnet/scnet_r50_fpn_1x_coco.py"}
# The test pipeline's resize target of the photograph the weights are
# conditioned on (mmdetection's 1333 x 800 checks nothing more and costs
# several times the time); the training batch is the same view.
SCALE = (384, 256)


@functools.lru_cache(maxsize=1)
def photograph():
  """[300, 451, 3] uint8 RGB."""
  from skimage import data
  return data.chelsea()


def mmdet_module():
  from tests.mmdet_reference import install
  install()
  import mmdet
  from mmdet.utils import register_all_modules
  register_all_modules()
  return mmdet


# Output layers and the spread of their outputs on the photograph: scores
# neither saturated nor flat, boxes moved by a fraction of their size.
OUTPUT_STD = {"rpn_cls": 2.0, "rpn_reg": 0.3, "fc_cls": 1.5, "fc_reg": 0.5,
              "conv_logits": 2.0}


def set_backbone_statistics(model, inputs):
  """Sets every BatchNorm of model.backbone to the statistics of its input
  on `inputs`, so each layer is normalised on that image."""
  def set_stats(module, args):
    x = args[0]
    module.running_mean.data = x.mean(dim=(0, 2, 3))
    module.running_var.data = x.var(dim=(0, 2, 3)) + 1e-3

  hooks = [m.register_forward_pre_hook(set_stats)
           for m in model.backbone.modules()
           if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    model.backbone(inputs)
  for h in hooks:
    h.remove()


def condition(model, inputs, samples, seed):
  """Random weights under which the network is well-conditioned: He-scaled
  convs and FCs, BatchNorm statistics set from this image's activations
  (each layer normalised), and each output layer scaled so its outputs on
  this image have the spread OUTPUT_STD asks for."""
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear,
                      torch.nn.ConvTranspose2d)):
      w = m.weight
      fan_in = w[0].numel() if not isinstance(
          m, torch.nn.ConvTranspose2d) else w.shape[0] * w[0, 0].numel()
      w.data = torch.randn(w.shape, generator=g) * (2.0 / fan_in) ** 0.5
      if m.bias is not None:
        m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.05
    elif isinstance(m, torch.nn.BatchNorm2d):
      m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g)
      m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
  set_backbone_statistics(model, inputs)
  # Output layers measured on one prediction and rescaled; twice, as a
  # stage's rescaled regression moves the next stage's inputs.
  outputs = [(name.rsplit(".", 1)[-1], m) for name, m in
             model.named_modules() if name.rsplit(".", 1)[-1] in OUTPUT_STD]
  for _ in range(2):
    seen = {id(m): [] for _, m in outputs}
    hooks = [m.register_forward_hook(
        lambda mod, args, out: seen[id(mod)].append(out.detach()))
             for _, m in outputs]
    with torch.no_grad():
      model.predict(inputs, samples, rescale=True)
    for h in hooks:
      h.remove()
    for kind, m in outputs:
      if not seen[id(m)]:
        continue
      std = float(torch.cat([o.flatten() for o in seen[id(m)]]).std())
      m.weight.data *= OUTPUT_STD[kind] / std
      if m.bias is not None:
        m.bias.data *= OUTPUT_STD[kind] / std


def _test_pipeline(cfg):
  """mmdetection's test pipeline from its config, on the photograph (an
  array, not a file: LoadImageFromNDArray; no annotations; Resize into
  SCALE): {"inputs": [CHW BGR uint8], "data_samples": [its sample]}."""
  from mmcv.transforms import Compose
  steps = []
  for step in cfg.test_pipeline:
    step = dict(step)
    if step["type"] == "LoadImageFromFile":
      step = dict(type="LoadImageFromNDArray")
    elif step["type"] == "Resize":
      step["scale"] = SCALE
    elif step["type"] == "LoadAnnotations":
      continue
    steps.append(step)
  # mmdetection reads images as BGR.
  out = Compose(steps)(dict(img=photograph()[:, :, ::-1].copy(), img_id=0))
  return {"inputs": [out["inputs"]], "data_samples": [out["data_samples"]]}


def mmdet_config(path):
  """mmdetection's config file `path` (relative to the configs it ships,
  e.g. CONFIGS[family]), loaded by mmengine."""
  mmdet = mmdet_module()
  from mmengine.config import Config
  return Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__),
                                      ".mim", "configs", path))


@functools.lru_cache(maxsize=None)
def reference(family):
  """(mmdet model, its preprocessed inputs, data samples, numpy state
  dict), cached per family."""
  cfg = mmdet_config(CONFIGS[family])
  from mmdet.registry import MODELS
  cfg.model.backbone.init_cfg = None
  torch.manual_seed(0)
  model = MODELS.build(cfg.model)
  model.eval()
  data = model.data_preprocessor(_test_pipeline(cfg), False)
  condition(model, data["inputs"], data["data_samples"], seed=1)
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return model, data["inputs"], data["data_samples"], state


def set_field(config, dotted, value):
  """config["a"]["b"]["c"] = value for dotted "a.b.c"."""
  *path, last = dotted.split(".")
  for key in path:
    config = config[key]
  config[last] = value


def our_model(family, state, settings=()):
  """(config, model, variables): our default config of `family` with the
  (dotted model field, value) pairs `settings`, and mmdetection's state
  dict converted into it. The parameter layout is the default config's
  (e.g. with HTC's last_stage merge the earlier mask heads' logits are
  not called at test, yet the checkpoint holds them)."""
  c = config_lib.get_base(family)
  full = build_model(c)
  for key, value in settings:
    set_field(c.model, key, value)
  return c, build_model(c), converted(full, c, state)


def converted(model, config, state):
  """mmdetection's state dict converted into `model`'s variables (their
  layout from jax.eval_shape: nothing is initialised or compiled)."""
  shapes = jax.eval_shape(lambda b: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)},
      b), dummy_batch(config, 1, (64, 64)))
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  variables, _ = convert_state_dict(state, "mmdet", {
      "params": zeros["params"], "batch_stats": zeros["batch_stats"]})
  return variables


def rel(ours, ref):
  """max |ours - ref| / max |ref|."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12))
