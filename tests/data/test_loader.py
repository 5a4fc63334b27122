"""Static shapes, determinism, multi-host sharding and exact resume of the
loaders; the train step compiles once over an epoch of shapes."""
import jax
import numpy as np

from scnet_jax.data import loader, transforms
from scnet_jax.data.coco import CocoSource
from scnet_jax.models import build_model
from scnet_jax.training.state import init_variables
from tests.helpers import compiles, shapes_root, tiny_config, train_batches


def _source():
  root = shapes_root()
  return CocoSource(f"{root}/annotations/train.json", f"{root}/train")


def test_batches_have_identical_shapes_and_dtypes():
  config = tiny_config("scnet", global_batch=4)
  batches = train_batches(config, 3)
  spec = {k: (v.shape, v.dtype) for k, v in batches[0].items()}
  assert spec["image"] == ((4, 128, 128, 3), np.uint8)
  assert spec["gt_semantic"] == ((4, 16, 16), np.uint8)
  for b in batches[1:]:
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == spec
  assert not np.array_equal(batches[0]["image"], batches[1]["image"])


def test_resume_at_a_step_gives_the_same_next_batch():
  config = tiny_config("mask_rcnn", global_batch=4)
  src = _source()
  it, _ = loader.train_iterator(src, config, 20)
  for _ in range(3):
    next(it)
  expected = next(it)
  again, _ = loader.train_iterator(src, config, 20, start_step=3)
  got = next(again)
  for k in expected:
    np.testing.assert_array_equal(got[k], expected[k])


def test_hosts_read_disjoint_rows_of_each_global_batch():
  config = tiny_config("mask_rcnn", global_batch=4)
  src = _source()
  whole, _ = loader.train_iterator(src, config, 2)
  parts = [loader.train_iterator(src, config, 2, p, 2)[0] for p in (0, 1)]
  for _ in range(2):
    full = next(whole)
    halves = [next(p) for p in parts]
    np.testing.assert_array_equal(
        np.concatenate([h["image_id"] for h in halves]), full["image_id"])


def test_epochs_reshuffle_and_cover_every_image_once():
  config = tiny_config("mask_rcnn", global_batch=4)
  bucket_of, _ = loader.record_buckets(_source(), config.data)
  plan = loader.TrainPlan(bucket_of, 4, 0, 0.5, 2 * 12)
  epoch = lambda e: [plan[i][0] for i in range(e * 48, (e + 1) * 48)]
  assert sorted(epoch(0)) == list(range(48))
  assert epoch(0) != epoch(1)


def test_buckets_and_rescale_follow_mmdet():
  assert transforms.rescale_size(480, 640, (1333, 800)) == ((800, 1067),
                                                           800 / 480)
  assert transforms.rescale_size(427, 640, (1333, 800))[0] == (800, 1199)
  buckets = [(800, 1344), (1344, 800)]
  assert transforms.choose_bucket((800, 1333), buckets) == 0
  assert transforms.choose_bucket((1333, 750), buckets) == 1


def test_train_step_compiles_once_over_an_epoch():
  config = tiny_config("mask_rcnn", global_batch=4)
  model = build_model(config)
  params, stats = init_variables(model, config, 0)
  step = jax.jit(lambda p, b: model.apply(
      {"params": p, "batch_stats": stats}, b, method=model.loss,
      rngs={"sample": jax.random.PRNGKey(0)}))
  batches = train_batches(config, 12)  # 48 images: one epoch
  step(params, batches[0])
  with compiles() as again:
    for batch in batches[1:]:
      step(params, batch)
  assert not again


def test_multi_scale_training_draws_one_scale_per_image():
  """data.train_scales as mmdet's RandomChoiceResize: each image resized
  into one of the scales (drawn per image, the same on a resumed run),
  inside the bucket data.image_scale picked; a scale larger than
  image_scale is refused with the field's name."""
  import pytest
  from scnet_jax.errors import DataError
  scales = ((128, 128), (96, 96), (64, 64))
  config = tiny_config("mask_rcnn", global_batch=4,
                       **{"data.train_scales": scales})
  src = _source()
  it, _ = loader.train_iterator(src, config, 6)
  sizes = {int(b["image_hw"][i, 0]) for b in [next(it) for _ in range(6)]
           for i in range(4)}
  assert sizes == {128, 96, 64}
  first, _ = loader.train_iterator(src, config, 6, start_step=5)
  again, _ = loader.train_iterator(src, config, 6, start_step=5)
  a, b = next(first), next(again)
  np.testing.assert_array_equal(a["image_hw"], b["image_hw"])
  # Boxes follow their image's scale.
  assert np.all(a["gt_boxes"][..., 2:] <= a["image_hw"][:, None, ::-1])
  config.data.train_scales = ((160, 160),)
  with pytest.raises(DataError, match="data.train_scales"):
    loader.train_iterator(src, config, 1)
