"""Pictures: small images upscaled to a readable size, a label placed
where it covers no other box when such a place exists."""
import numpy as np

from scnet_jax.visualize import _place_label, draw_batch, draw_instances
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
