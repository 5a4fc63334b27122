r"""Export a trained model's predictor as serialized StableHLO (`jax.export`),
and run it again without the model code.

  python -m scnet_jax.export --config configs/scnet_tiny_shapes.py \
      --checkpoint runs/scnet_tiny --out runs/scnet_tiny_export [--batch 4]

writes OUT/predict.jax (the serialized jitted `predict` for one bucket and
batch size; the weights are an argument, not constants),
OUT/variables.msgpack (the weights) and OUT/meta.json (bucket, batch,
class names, thresholds, mask layout). The batch size is fixed: the
RoIAlign splits its gather into chunks by the number of RoIs of the whole
batch, a static decision a symbolic batch dimension cannot take.

  from scnet_jax.export import load_exported
  predict = load_exported("runs/scnet_tiny_export")
  out = predict(images, image_hw)   # uint8 [B, H, W, 3] on the bucket
                                    # canvas, int32 [B, 2] resized sizes

Loading needs jax and flax only: no scnet_jax model code runs. The same
file serves from any runtime with a PJRT plugin (C++ through the PJRT C
API, or TensorFlow's XlaCallModule op): it is a StableHLO module whose
inputs are the flattened weights, images and sizes.
"""
import json
import os

import jax
import numpy as np
from absl import flags

from scnet_jax.cli import checkpoint_flag, config_flag, run_cli

FLAGS = flags.FLAGS
OUTPUTS = ("boxes", "scores", "labels", "masks", "num_detections")


def export_predictor(config, variables, out_dir, batch_size=1,
                     class_names=None):
  """Writes the serialized predictor of `config` with `variables` for the
  first bucket of config.data.buckets and `batch_size` images."""
  from flax import serialization
  from scnet_jax.models import build_model
  from scnet_jax.models import dummy_batch

  model = build_model(config)

  def detections(v, image, image_hw):
    return model.apply(v, {"image": image, "image_hw": image_hw},
                       method=model.predict)

  spec = lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
  batch = dummy_batch(config, batch_size, train=False)
  args = (jax.tree.map(spec, variables), spec(batch["image"]),
          spec(batch["image_hw"]))
  layout = jax.eval_shape(detections, *args)  # the static mask layout
  exported = jax.export.export(jax.jit(lambda *a: {
      k: getattr(detections(*a), k) for k in OUTPUTS}))(*args)
  meta = {"bucket": list(config.data.buckets[0]), "batch": batch_size,
          "class_names": list(class_names or []),
          "score_thr": config.model.test.score_thr,
          "mask_thr": config.model.test.mask_thr,
          "mask_kind": layout.mask_kind, "mask_stride": layout.mask_stride,
          "mask_paste": layout.mask_paste}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "predict.jax"), "wb") as f:
    f.write(exported.serialize())
  with open(os.path.join(out_dir, "variables.msgpack"), "wb") as f:
    f.write(serialization.msgpack_serialize(jax.tree.map(np.asarray,
                                                         variables)))
  with open(os.path.join(out_dir, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  return meta


def load_exported(out_dir):
  """A function (images [B, H, W, 3] uint8, image_hw [B, 2] int32) ->
  dict of host arrays (boxes, scores, labels, masks, num_detections) of an
  export_predictor folder; `.meta` holds its meta.json."""
  from flax import serialization
  with open(os.path.join(out_dir, "predict.jax"), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(os.path.join(out_dir, "variables.msgpack"), "rb") as f:
    variables = jax.device_put(serialization.msgpack_restore(f.read()))
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  call = jax.jit(exported.call)

  def predict(images, image_hw):
    return jax.device_get(call(variables, np.asarray(images, np.uint8),
                               np.asarray(image_hw, np.int32)))
  predict.meta = meta
  return predict


def main(argv):
  del argv
  import time

  from scnet_jax import checkpoint
  from scnet_jax.models import build_model
  from scnet_jax.training.state import abstract_variables
  config = FLAGS.config
  variables, step = checkpoint.restore_params(
      FLAGS.checkpoint, config, abstract_variables(build_model(config),
                                                   config))
  t0 = time.perf_counter()
  meta = export_predictor(config, variables, FLAGS.out, FLAGS.batch,
                          checkpoint.read_class_names(FLAGS.checkpoint))
  size = sum(os.path.getsize(os.path.join(FLAGS.out, n))
             for n in os.listdir(FLAGS.out))
  print(f"exported step {step} of {FLAGS.checkpoint} for bucket "
        f"{meta['bucket']} and batch {meta['batch']} to {FLAGS.out} "
        f"({size / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
  config_flag()
  checkpoint_flag()
  flags.DEFINE_string("out", None, "Output folder.", required=True)
  flags.DEFINE_integer("batch", 1, "Images per call (static).")
  run_cli(main)
