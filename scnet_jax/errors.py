"""Exceptions for bad input. Each message names the file and the field; the
command-line tools print it as one line and exit non-zero (`cli_guard`)."""
import functools
import sys


class ScnetError(Exception):
  """Base of the errors a user can fix."""


class DataError(ScnetError, ValueError):
  """Bad dataset input: missing or corrupt file, bad annotation."""


class ConfigError(ScnetError, ValueError):
  """Bad configuration: unknown key, wrong value, mismatched checkpoint."""


class CheckpointError(ScnetError, ValueError):
  """A checkpoint that is missing or belongs to another model."""


class NonFiniteLossError(ScnetError, FloatingPointError):
  """Training produced a NaN or infinite loss."""


def cli_guard(main):
  """Runs `main`; a ScnetError becomes 'error: message' and exit code 2."""
  @functools.wraps(main)
  def wrapper(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except ScnetError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  return wrapper
