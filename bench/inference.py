"""Inference of Mask R-CNN R-50-FPN: ours (jit) vs torchvision's
maskrcnn_resnet50_fpn, same weights, one 800x1216 photograph, batch 1 and 2.

Below the two headline rows, a profile of batch 1 by stage: each of our
stages is the difference between two jitted prefixes of `predict`
(features; + RPN proposals; the rest), each of torchvision's is its
sub-module called on the previous one's output. Torchvision's time also
holds its mask paste into the image; ours pastes on the host in evaluation
(bench/postprocess.py times that).
The last line is torchvision time / our time at batch 1.

  python bench/inference.py
"""
import os
import sys

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import report, time_call, time_jax  # noqa: E402
from bench.models import H, W, ours_from, photo, torchvision_model  # noqa


def our_stages(model, variables, data):
  """Seconds of our cumulative prefixes: features, proposals, predict."""
  def to_proposals(m, batch):
    return m.rpn_head.proposals(*m.neck_and_canvas(batch["image"],
                                                   batch["image_hw"]))

  prefixes = [lambda m, b: m.neck_and_canvas(b["image"], b["image_hw"]),
              to_proposals,
              lambda m, b: m.predict(b)]
  times = []
  for prefix in prefixes:
    fn = jax.jit(lambda v, b, p=prefix: model.apply(v, b, method=p))
    times.append(time_jax(fn, variables, data, repeats=3)[1])
  return times


def torchvision_stages(tv, tensors):
  """Seconds of torchvision's transform + backbone/FPN, RPN, RoI heads and
  post-processing (mask paste), each run on the previous stage's output."""
  with torch.no_grad():
    images, _ = tv.transform(tensors)
    t_features = time_call(lambda: tv.backbone(images.tensors), repeats=3)
    feats = tv.backbone(images.tensors)
    t_rpn = time_call(lambda: tv.rpn(images, feats), repeats=3)
    props, _ = tv.rpn(images, feats)
    heads = lambda: tv.roi_heads(feats, props, images.image_sizes)
    t_heads = time_call(heads, repeats=3)
    dets, _ = heads()
    sizes = [t.shape[-2:] for t in tensors]
    t_paste = time_call(lambda: tv.transform.postprocess(
        dets, images.image_sizes, sizes), repeats=3)
  return t_features, t_rpn, t_heads, t_paste, len(dets[0]["boxes"])


def main():
  torch.set_num_threads(os.cpu_count())
  tv = torchvision_model().eval()
  _, model, variables = ours_from(tv)
  predict = jax.jit(lambda v, b: model.apply(v, b, method=model.predict))
  rows, stage_data = [], None
  for batch in (1, 2):
    images = photo(batch)
    data = {"image": images, "image_hw": np.tile([[H, W]], (batch, 1)).astype(
        np.int32)}
    first, t_ours = time_jax(predict, variables, data, repeats=3)
    print(f"compile batch {batch}: {first - t_ours:.1f} s")
    tensors = [torch.tensor(im).permute(2, 0, 1).float() / 255 for im in
               images]
    with torch.no_grad():
      t_peer = time_call(lambda: tv(tensors), repeats=3)
    rows.append((f"mask r-cnn inference batch {batch}", t_peer, t_ours))
    if batch == 1:
      stage_data = (data, tensors)
  data, tensors = stage_data
  t_feat, t_prop, t_all = our_stages(model, variables, data)
  p_feat, p_rpn, p_heads, p_paste, p_dets = torchvision_stages(tv, tensors)
  ours_dets = int(predict(variables, data).num_detections[0])
  print(f"detections: torchvision {p_dets}, ours {ours_dets}")
  rows += [("  batch 1: backbone + FPN", p_feat, t_feat),
           ("  batch 1: RPN head + proposals", p_rpn, t_prop - t_feat),
           ("  batch 1: RoI heads (box, NMS, mask)", p_heads, t_all - t_prop),
           ("  batch 1: torchvision mask paste (ours: host)", p_paste,
            None)]
  report(rows, rows[0][1] / rows[0][2])


if __name__ == "__main__":
  main()
