"""Metrics to DIR/metrics.jsonl (one line per training step, one per
evaluation with `val/` keys) and TensorBoard; written in bulk by the
loop every log_every steps."""
import json
import os


class MetricWriter:

  def __init__(self, workdir, enabled=True):
    self.enabled = enabled
    if not enabled:
      return
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    try:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard files are optional
      self.tb = None

  def write(self, step, record):
    if not self.enabled:
      return
    self.jsonl.write(json.dumps(record, sort_keys=True) + "\n")
    if self.tb is not None:
      for k, v in record.items():
        if k != "step":
          self.tb.add_scalar(k, v, step)

  def flush(self):
    if self.enabled:
      self.jsonl.flush()
      if self.tb is not None:
        self.tb.flush()

  def close(self):
    if self.enabled:
      self.jsonl.close()
      if self.tb is not None:
        self.tb.close()


def read_metrics(workdir):
  """metrics.jsonl as {step: record} (training and evaluation keys of a
  step merged); a step logged twice (a run killed after its last
  checkpoint, then resumed) keeps its latest values."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      out.setdefault(rec["step"], {}).update(rec)
  return out
