"""Converting a state_dict into our variables, with strict checking."""
import flax
import numpy as np

from scnet_jax.convert.layout import IGNORED, RULES, convert_tensor, map_module
from scnet_jax.errors import CheckpointError

# Heads whose shape depends on the class count (reinitialised on request).
CLASS_HEADS = ("fc_cls", "fc_reg", "conv_logits", "glbctx_head/fc",
               "mask_head/conv_cls")


def _show(keys, limit=8):
  keys = sorted(keys)
  more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def convert_state_dict(state_dict, source, variables,
                       reinit_mismatched_heads=False, backbone_only=False):
  """Returns new variables {'params', 'batch_stats'} filled from state_dict.

  Args:
    state_dict: {torch key: numpy array}.
    source: 'mmdet', 'torchvision' (Mask R-CNN) or 'torchvision_resnet'.
    variables: freshly initialised variables of our model (the target
      layout; entries not converted keep these values only when allowed).
    reinit_mismatched_heads: keep the fresh class-dependent heads when the
      checkpoint's class count differs, instead of refusing.
    backbone_only: only backbone/* must be filled (ImageNet weights).
  Raises:
    CheckpointError naming the missing, unexpected and mis-shaped keys.
  """
  target = {c: flax.traverse_util.flatten_dict(variables.get(c, {}), sep="/")
            for c in ("params", "batch_stats")}
  out = {c: dict(v) for c, v in target.items()}
  filled, unexpected, wrong, reinit = set(), [], [], []
  for key, value in state_dict.items():
    if IGNORED.search(key):
      continue
    module, _, suffix = key.rpartition(".")
    mapped = map_module(module, RULES[source])
    if mapped is None:
      unexpected.append(key)
      continue
    path, kind = mapped
    for collection, leaf, arr in convert_tensor(kind, suffix, value):
      full = f"{path}/{leaf}"
      if full not in target[collection]:
        unexpected.append(f"{key} (-> {collection}/{full})")
        continue
      want = tuple(target[collection][full].shape)
      if tuple(arr.shape) != want:
        if reinit_mismatched_heads and any(h in full for h in CLASS_HEADS):
          reinit.append(full)
          filled.add((collection, full))
          continue
        wrong.append(f"{key} {tuple(np.shape(value))} -> {full} needs {want}")
        continue
      out[collection][full] = arr.astype(target[collection][full].dtype)
      filled.add((collection, full))
  missing = [f"{c}/{k}" for c, keys in target.items() for k in keys
             if (c, k) not in filled and
             (not backbone_only or k.startswith("backbone/"))]
  problems = []
  if missing:
    problems.append(f"missing {len(missing)}: {_show(missing)}")
  if unexpected:
    problems.append(f"unexpected {len(unexpected)}: {_show(unexpected)}")
  if wrong:
    problems.append(f"wrong shape {len(wrong)}: {_show(wrong)}"
                    + ("" if reinit_mismatched_heads else
                       " (--reinit-mismatched-heads keeps fresh class "
                       "heads)"))
  if problems:
    raise CheckpointError("checkpoint does not match the config: " +
                          "; ".join(problems))
  result = {c: flax.traverse_util.unflatten_dict(v, sep="/")
            for c, v in out.items() if v}
  if backbone_only:
    result = {c: {"backbone": v["backbone"]} for c, v in result.items()
              if "backbone" in v}
  return result, reinit
