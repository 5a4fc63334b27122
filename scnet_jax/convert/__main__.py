r"""Convert a PyTorch checkpoint into an Orbax checkpoint of ours.

  python -m scnet_jax.convert --config configs/scnet_r50_fpn_1x_coco.py \
      --source mmdet --checkpoint scnet_r50_fpn_1x_coco-c3f09857.pth \
      --out weights/scnet_r50_1x
  python -m scnet_jax.convert --config configs/scnet_r50_fpn_1x_coco.py \
      --source torchvision --checkpoint resnet50-0676ba61.pth --out weights/r50

Sources: mmdet (SCNet, HTC, Cascade Mask R-CNN, Mask R-CNN), torchvision
(a `maskrcnn_resnet50_fpn` state_dict into configs/
mask_rcnn_r50_fpn_torchvision.py, or ImageNet ResNet/ResNeXt weights,
backbone only, for --config.init_from). eval.py, Predictor and
--config.init_from read the result. Reading .pth files needs torch.
"""
import argparse
import sys

from scnet_jax.errors import ScnetError


def load_torch_state_dict(path):
  """{key: numpy array} of a .pth file (a bare state_dict or mmdet's
  {'state_dict': ..., 'meta': ...})."""
  import torch
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise ScnetError(f"{path}: checkpoint file not found") from None
  except Exception:  # mmdet checkpoints pickle their meta: trusted files
    obj = torch.load(path, map_location="cpu", weights_only=False)
  if isinstance(obj, dict) and "state_dict" in obj:
    obj = obj["state_dict"]
  return {k: v.detach().cpu().numpy() for k, v in obj.items()
          if hasattr(v, "detach")}


def convert_file(config, source, checkpoint, out, reinit=False, log=print):
  from scnet_jax import checkpoint as ckpt_lib
  from scnet_jax.convert.core import convert_state_dict
  from scnet_jax.models import build_model
  from scnet_jax.training.state import init_variables
  state_dict = load_torch_state_dict(checkpoint)
  backbone_only = source == "torchvision" and not any(
      k.startswith("backbone.") for k in state_dict)
  layout = "torchvision_resnet" if backbone_only else source
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  variables, reinit_keys = convert_state_dict(
      state_dict, layout, {"params": params, "batch_stats": stats}, reinit,
      backbone_only)
  meta = ckpt_lib.make_meta(config, variables["params"])
  meta["source"] = f"{source}:{checkpoint}"
  writer = ckpt_lib.Checkpointer(out, async_save=False)
  writer.save(0, variables, None, meta, wait=True)
  writer.close()
  what = "backbone" if backbone_only else config.model_name
  log(f"wrote {out} ({what} from {source}; "
      f"{len(reinit_keys)} class heads reinitialised)")
  return variables


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", required=True)
  p.add_argument("--source", choices=["torchvision", "mmdet"],
                 required=True)
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--reinit-mismatched-heads", action="store_true")
  a = p.parse_args(argv)
  from scnet_jax.predictor import load_config
  try:
    convert_file(load_config(a.config), a.source, a.checkpoint, a.out,
                 a.reinit_mismatched_heads)
  except ScnetError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
