r"""Predict every image of a folder with a trained model.

  python -m scnet_jax.predict_images --config configs/scnet_tiny_shapes.py \
      --checkpoint runs/scnet_tiny --images photos/ --out runs/predictions \
      [--pictures] [--score_thr 0.3] [--batch_per_device 2]

Reads JPEG, PNG, BMP, GIF, TIFF and WebP files of any size (grayscale,
palette and RGBA images are converted to RGB), predicts them in batches
split over every local device, and writes OUT/results.json: a COCO-format
results list, one entry per detection with the image's `file_name`,
`image_id` (its position in the sorted listing), contiguous `category_id`
with its `category_name`, `bbox` [x, y, w, h] in image pixels, `score` and
`segmentation` (compressed RLE). With --pictures, OUT/vis/<name>.png shows
the detections above the score threshold. A file that cannot be read is
reported in one line, skipped and counted; the others are still written.
"""
import json
import os
import sys

import numpy as np
from absl import flags
from pycocotools import mask as mask_utils

from scnet_jax.cli import checkpoint_flag, config_flag, run_cli
from scnet_jax.errors import DataError

FLAGS = flags.FLAGS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif",
                    ".tiff", ".webp")


def list_images(folder):
  """Sorted image files directly in `folder` (by extension)."""
  if not os.path.isdir(folder):
    raise DataError(f"{folder}: not a folder of images")
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith(IMAGE_EXTENSIONS))
  if not names:
    raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
  return [os.path.join(folder, n) for n in names]


def detection_records(image_id, file_name, det, class_names):
  """One image's Predictor output as COCO result dicts."""
  rles = mask_utils.encode(np.asfortranarray(
      det["masks"].transpose(1, 2, 0).astype(np.uint8))) if len(
          det["masks"]) else []
  out = []
  for i, (box, score, label) in enumerate(zip(det["boxes"], det["scores"],
                                              det["labels"])):
    x1, y1, x2, y2 = (float(v) for v in box)
    rle = dict(rles[i])
    rle["counts"] = rle["counts"].decode("ascii")
    out.append({"image_id": image_id, "file_name": file_name,
                "category_id": int(label),
                "category_name": class_names[int(label)],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score),
                "segmentation": rle})
  return out


def predict_folder(predictor, paths, out_dir, pictures=False, log=print,
                   progress=None):
  """Predicts `paths` in batches of predictor.batch_size; writes
  out_dir/results.json (and out_dir/vis/*.png). Returns (number of images
  predicted, [(path, reason)] of those skipped)."""
  from scnet_jax.data.coco import read_rgb
  from scnet_jax.drawing import draw_instances
  os.makedirs(out_dir, exist_ok=True)
  if pictures:
    os.makedirs(os.path.join(out_dir, "vis"), exist_ok=True)
  results, skipped, done = [], [], 0
  bar = progress(total=len(paths), unit="img") if progress else None
  for start in range(0, len(paths), predictor.batch_size):
    chunk, images = [], []
    for image_id, path in enumerate(paths[start:start + predictor.batch_size],
                                    start):
      try:
        images.append(read_rgb(path))
        chunk.append((image_id, path))
      except DataError as e:
        log(f"warning: {e}; skipped")
        skipped.append((path, str(e)))
    for (image_id, path), image, det in zip(
        chunk, images, predictor.predict_batch(images) if images else []):
      name = os.path.basename(path)
      results.extend(detection_records(image_id, name, det,
                                       predictor.class_names))
      if pictures:
        draw_instances(image, det["boxes"], det["labels"], det["masks"],
                       det["scores"], predictor.class_names,
                       caption=f"{name}: score >= {predictor.score_thr:.2f}"
                       ).save(
                           os.path.join(out_dir, "vis",
                                        os.path.splitext(name)[0] + ".png"))
      done += 1
    if bar is not None:
      bar.update(len(paths[start:start + predictor.batch_size]))
  if bar is not None:
    bar.close()
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(results, f)
  return done, skipped


def main(argv):
  del argv
  import jax
  import tqdm

  from scnet_jax.predictor import Predictor
  paths = list_images(FLAGS.images)
  predictor = Predictor.from_checkpoint(
      FLAGS.config, FLAGS.checkpoint, score_thr=FLAGS.score_thr,
      batch_size=FLAGS.batch_per_device * jax.local_device_count())
  out_dir = FLAGS.out or os.path.join(FLAGS.checkpoint, "predictions")
  progress = tqdm.tqdm if sys.stderr.isatty() else None
  done, skipped = predict_folder(predictor, paths, out_dir, FLAGS.pictures,
                                 progress=progress)
  if not done:
    raise DataError(f"{FLAGS.images}: none of its {len(paths)} image files "
                    f"could be read")
  print(f"predicted {done} images of {FLAGS.images}, skipped {len(skipped)} "
        f"unreadable; results in {os.path.join(out_dir, 'results.json')}")


if __name__ == "__main__":
  config_flag()
  checkpoint_flag()
  flags.DEFINE_string("images", None, "Folder of images.", required=True)
  flags.DEFINE_string("out", None, "Output folder (default: "
                      "CHECKPOINT/predictions).")
  flags.DEFINE_bool("pictures", False, "Also write OUT/vis/<name>.png.")
  flags.DEFINE_float("score_thr", 0.3, "Detections kept in the results and "
                     "pictures.")
  flags.DEFINE_integer("batch_per_device", 1, "Images per device per batch.")
  run_cli(main)
