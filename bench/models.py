"""Building both sides of the Mask R-CNN benches: torchvision's
maskrcnn_resnet50_fpn and ours with the same (converted) weights."""
import numpy as np
from PIL import Image

from scnet_jax.convert.core import convert_state_dict
from scnet_jax.models import build_model
from scnet_jax.training.state import init_variables

H, W = 800, 1216


def photo(batch=1, hw=(H, W)):
  """A real photograph resized to hw (800x1216), as [B, H, W, 3] uint8."""
  import skimage.data
  image = np.asarray(Image.fromarray(skimage.data.astronaut()).resize(
      hw[::-1]))
  return np.stack([image] * batch)


def torchvision_model():
  import torch
  import torchvision
  torch.manual_seed(0)
  return torchvision.models.detection.maskrcnn_resnet50_fpn(
      weights=None, weights_backbone=None, min_size=H, max_size=W)


def ours_from(tv_model, config_path="configs/mask_rcnn_r50_fpn_torchvision.py",
              bucket=(H, W)):
  # Imported here: the predictor pulls in the data loader (grain), which
  # the benches that only build models do not need.
  from scnet_jax.predictor import load_config
  config = load_config(config_path)
  config.data.buckets = (bucket,)
  config.data.max_instances = 8
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  if tv_model is None:  # random weights, no torch in this process
    return config, model, {"params": params, "batch_stats": stats}
  sd = {k: v.detach().numpy() for k, v in tv_model.state_dict().items()}
  variables, _ = convert_state_dict(sd, "torchvision",
                                    {"params": params, "batch_stats": stats})
  return config, model, variables
