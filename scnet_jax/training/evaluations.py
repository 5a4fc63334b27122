"""Evaluation during and after training (training/loop.py): the COCO
metrics of the validation set, written beside the training metrics, and
the best checkpoint by one metric."""
import concurrent.futures
import os
import time

from scnet_jax import checkpoint
from scnet_jax.data.sources import val_paths


class TrainingEvaluations:
  """Evaluation during and after training: metrics.jsonl/TensorBoard
  `val/*` records and the best checkpoint (workdir/best, by
  config.best_metric) kept apart from the rolling ones."""

  def __init__(self, config, workdir, log):
    """Reads and checks the validation annotations (before anything
    compiles: a fault there is reported at once)."""
    from scnet_jax.evaluation.inference import Evaluator
    self.config, self.workdir, self.log = config, workdir, log
    self.ann_file, self.image_dir = val_paths(config)
    self.writer = self.meta = None
    self.evaluator = None
    self._compiling = None   # Future of the program compiled in a thread
    self.best = None
    self.best_value = None
    if self.ann_file and (config.eval_every_steps > 0 or config.eval_at_end):
      self.evaluator = Evaluator(
          config, ann_file=self.ann_file, image_dir=self.image_dir,
          evaluator=config.evaluator,
          per_device_batch=config.eval_batch_per_device, log=log)

  def start(self, writer, meta, variables):
    """Opens workdir/best and compiles the evaluation's program in a
    thread: the training step's compile leaves a CPU core idle for most
    of its time, so the evaluation's compile costs nothing there (20 s of
    a tiny run on 2 cores). An error in it is raised by the first
    evaluation."""
    self.writer, self.meta = writer, meta
    if self.config.eval_every_steps > 0 and self.ann_file:
      self.best = checkpoint.Checkpointer(
          os.path.join(self.workdir, "best"), 1)
      step = self.best.latest_step()
      if step is not None:
        self.best_value = self.best.read_meta(step).get("best_value")
    if self.evaluator is not None:
      pool = concurrent.futures.ThreadPoolExecutor(1)
      self._compiling = pool.submit(self._compile, variables)
      pool.shutdown(wait=False)

  def _compile(self, variables):
    t0 = time.perf_counter()
    self.evaluator.compile(variables)
    self.log(f"evaluation program compiled beside training: "
             f"{time.perf_counter() - t0:.1f} s")

  def __call__(self, step, state, out_dir):
    c = self.config
    if self._compiling is not None:
      self._compiling.result()
      self._compiling = None
    metrics = self.evaluator(
        {"params": state.params, "batch_stats": state.batch_stats}, out_dir,
        desc=f"eval @ {step}")
    record = {f"val/{k}": float(v) for k, v in metrics.items()
              if k.startswith(("bbox_", "segm_"))}
    self.writer.write(step, dict(record, step=step))
    self.writer.flush()
    name = c.best_metric
    if self.best is not None and name in metrics:
      value = float(metrics[name])
      if self.best_value is None or value > self.best_value:
        self.best_value = value
        self.best.save(step, state, {"step": step},
                       dict(self.meta, best_metric=name, best_value=value),
                       wait=True)
        self.log(f"step {step}: best {name} so far ({value:.4f}); saved in "
                 f"{self.workdir}/best/{step}")
    return metrics

  def close(self):
    if self.best is not None:
      self.best.close()
