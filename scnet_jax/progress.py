"""Progress bars (tqdm: count, rate, ETA) for training, evaluation and
dataset generation. Shown only on process 0, only when stdout is a
terminal and config.progress is on; log lines are written above an open
bar instead of through it."""
import sys


class _NoBar:
  def update(self, n=1):
    pass

  def set_postfix_str(self, text):
    pass

  def close(self):
    pass


def enabled(config=None):
  import jax
  on = config is None or config.get("progress", True)
  return bool(on) and jax.process_index() == 0 and sys.stdout.isatty()


def bar(total, desc, unit, on, initial=0):
  """A tqdm bar over `total` units when `on`, else one that does nothing."""
  if not on:
    return _NoBar()
  import tqdm
  return tqdm.tqdm(total=total, desc=desc, unit=unit, initial=initial,
                   dynamic_ncols=True, file=sys.stdout)


def logger(log, on):
  """`log` (print by default) routed around an open bar when `on`."""
  if not (on and log is print):
    return log
  import tqdm
  return tqdm.tqdm.write
