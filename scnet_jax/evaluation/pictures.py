"""Prediction overlays for the first N images of a split."""
import os

from scnet_jax import checkpoint
from scnet_jax.data.coco import CocoSource
from scnet_jax.predictor import Predictor
from scnet_jax.visualize import draw_instances, side_by_side


def write_prediction_pictures(config, variables, checkpoint_dir, ann_file,
                              image_dir, out_dir, num, score_thr,
                              compare_gt=False):
  """Writes out_dir/pred_{image_id}.png for `num` images (with the ground
  truth on the left when compare_gt); returns paths."""
  src = CocoSource(ann_file, image_dir, train=False)
  names = checkpoint.read_class_names(checkpoint_dir) or src.class_names
  predictor = Predictor(config, variables, class_names=names,
                        score_thr=score_thr)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for rec in src.records[:num]:
    image = src.load_image(rec)
    det = predictor(image)
    pic = draw_instances(
        image, det["boxes"], det["labels"], det["masks"], det["scores"],
        predictor.class_names,
        caption=f"image {rec['image_id']}: predictions, score >= "
        f"{score_thr:.2f}")
    if compare_gt:
      truth = draw_instances(image, rec["boxes"], rec["labels"],
                             src.load_masks(rec), None,
                             predictor.class_names,
                             caption=f"image {rec['image_id']}: ground truth")
      pic = side_by_side([truth, pic])
    path = os.path.join(out_dir, f"pred_{rec['image_id']}.png")
    pic.save(path)
    paths.append(path)
  return paths
