"""Evaluation during training: COCO metrics every eval_every_steps in
metrics.jsonl (val/ keys) and TensorBoard, the best checkpoint by
config.best_metric kept apart in workdir/best, readable by eval.py's
restore."""
import os

from scnet_jax import checkpoint
from scnet_jax.models import build_model
from scnet_jax.training.state import abstract_variables
from scnet_jax.training.writers import read_metrics
from tests.helpers import tiny_config
from tests.training.test_resume import _train


def test_metrics_every_n_steps_and_the_best_checkpoint(tmp_path):
  _train(tmp_path, 4, "--config.eval_every_steps=2",
         "--config.eval_at_end=True", "--config.best_metric=bbox_AP50",
         "--config.keep_checkpoints=1")
  records = read_metrics(tmp_path)
  evals = {s: r["val/bbox_AP50"] for s, r in records.items()
           if "val/bbox_AP50" in r}
  assert sorted(evals) == [2, 4]
  assert all("loss" in records[s] for s in evals)  # merged with training
  assert os.listdir(tmp_path / "checkpoints") == ["4"]  # rolling: 1 kept
  (best,) = os.listdir(tmp_path / "best")
  assert evals[int(best)] == max(evals.values())
  ckpt = checkpoint.Checkpointer(tmp_path / "best", async_save=False)
  meta = ckpt.read_meta()
  ckpt.close()
  assert meta["best_metric"] == "bbox_AP50"
  assert meta["best_value"] == max(evals.values())
  config = tiny_config("mask_rcnn")
  _, step = checkpoint.restore_params(
      tmp_path / "best", config, abstract_variables(build_model(config),
                                                    config))
  assert step == int(best)
  assert any(f.startswith("events") for f in
             os.listdir(tmp_path / "tensorboard"))
