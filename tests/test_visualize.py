"""Pictures: small images upscaled to a readable size, a label placed
where it covers no other box when such a place exists."""
import numpy as np

from scnet_jax.drawing import _place_label, draw_batch, draw_instances
from tests.helpers import tiny_config, train_batches


def test_small_images_are_upscaled_with_caption_and_legend():
  image = np.zeros((100, 60, 3), np.uint8)
  pic = draw_instances(image, np.array([[5, 5, 30, 40]], np.float32), [1],
                       np.ones((1, 100, 60), bool), [0.5], ["a", "b"],
                       caption="score >= 0.30")
  assert pic.size[0] == 60 * 6  # long side 100 -> 600 >= 512
  assert pic.size[1] > 100 * 6  # caption above, legend below
  big = draw_instances(np.zeros((700, 900, 3), np.uint8),
                       np.zeros((0, 4)), [])
  assert big.size == (900, 700)  # large images keep their size


def test_label_avoids_other_boxes():
  box = (50, 50, 100, 100)
  above = (40, 20, 120, 49)  # covers the spot above the box
  r = _place_label(box, (30, 10), [above], 300, 300)
  assert not (r[0] < above[2] and above[0] < r[2] and r[1] < above[3]
              and above[1] < r[3])
  # Nothing in the way: above the top-left corner.
  assert _place_label(box, (30, 10), [], 300, 300) == (50, 40, 80, 50)
  # No free place: still inside the picture.
  r = _place_label((0, 0, 300, 300), (30, 10), [(0, 0, 300, 300)], 300, 300)
  assert 0 <= r[0] and r[2] <= 300 and 0 <= r[1] and r[3] <= 300


def test_loader_samples_beside_their_semantic_map():
  (batch,) = train_batches(tiny_config("scnet"), 1)
  pics = draw_batch(batch, ["circle", "square", "triangle", "star"])
  assert len(pics) == 2
  assert pics[0].width == 2 * 128 * 4  # both upscaled x4 to 512 px


def test_prediction_pictures_draw_the_results_file(tmp_path):
  """The pictures show the results file's detections at or above the
  threshold: the ground truth given as results tints its masks in the
  picture; the same results below the threshold leave the picture as
  an empty results file does."""
  import json

  from PIL import Image

  from scnet_jax.evaluation.pictures import write_prediction_pictures
  from tests.helpers import shapes_root

  ann = f"{shapes_root()}/annotations/val.json"
  with open(ann) as f:
    truth = [a for a in json.load(f)["annotations"] if a["image_id"] == 1]
  pictures = {}
  for name, score in (("above", 0.9), ("below", 0.1), ("empty", None)):
    results = [] if score is None else [
        {"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"],
         "score": score, "segmentation": a["segmentation"]} for a in truth]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(results))
    (out,) = write_prediction_pictures(
        str(path), ann, f"{shapes_root()}/val", str(tmp_path / name), 1, 0.3)
    with Image.open(out) as pic:
      pictures[name] = np.asarray(pic.convert("RGB")).astype(np.int32)
  assert (pictures["below"] == pictures["empty"]).all()
  # Detections add a legend row below: compare the part both pictures have.
  empty = pictures["empty"]
  above = pictures["above"][:empty.shape[0]]
  changed = np.abs(above - empty).sum(-1) > 0
  assert changed.mean() > 0.05   # the objects' masks, boxes and labels
