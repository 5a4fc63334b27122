"""Trace-time argument checks, so bad input fails with a readable message
instead of a shape error from deep inside XLA."""


def check_rank(name, x, rank, last_dim=None):
  """Raises ValueError unless `x` has `rank` dims (and last dim `last_dim`)."""
  shape = getattr(x, "shape", None)
  if shape is None:
    raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
  if len(shape) != rank:
    raise ValueError(f"{name}: expected rank {rank}, got shape {tuple(shape)}")
  if last_dim is not None and shape[-1] != last_dim:
    raise ValueError(
        f"{name}: expected last dimension {last_dim}, got shape {tuple(shape)}")


def check_same_length(name_a, a, name_b, b):
  if a.shape[0] != b.shape[0]:
    raise ValueError(
        f"{name_a} and {name_b} must have the same length, got "
        f"{a.shape[0]} and {b.shape[0]}")


def check_positive_size(name, size):
  """Normalises an int or (h, w) pair and checks both are >= 1."""
  if isinstance(size, int):
    size = (size, size)
  size = tuple(int(s) for s in size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"{name}: expected positive (h, w), got {size}")
  return size
