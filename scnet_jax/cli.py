"""Shared command-line plumbing: the --config flag (a Python config file
with --config.FIELD=VALUE overrides) and one-line errors."""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from scnet_jax.errors import ScnetError


def config_flag(name="config"):
  config_flags.DEFINE_config_file(name, None, "Path to a config file in "
                                  "configs/.", lock_config=True)
  flags.mark_flag_as_required(name)


def checkpoint_flag():
  """--checkpoint: what train.py wrote, or a converted checkpoint."""
  flags.DEFINE_string("checkpoint", None, "A workdir of train.py, its "
                      "checkpoints/ folder, or a converted checkpoint.",
                      required=True)


def run_cli(main, usage=None):
  """absl.app.run with user errors printed as one line (exit code 2),
  including a --config.FIELD that does not exist. usage: the text --help
  prints (absl prints the __main__ module's docstring: a console command's
  __main__ is pip's wrapper, which has none)."""
  if usage:
    sys.modules["__main__"].__doc__ = usage
  def guarded(argv):
    try:
      return main(argv)
    except ScnetError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  logging.set_verbosity(logging.WARNING)
  # --help / --helpfull: absl defines them in app.run, after this parse.
  app.define_help_flags()
  try:
    flags.FLAGS(sys.argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except (KeyError, AttributeError) as e:
    # ml_collections raises these for a --config.FIELD that does not exist.
    bad = [a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config.")
           and str(e).strip("'\"") in a.split("=")[0]]
    print(f"error: no such config field: {bad[0] if bad else e} (see the "
          f"config file for the fields there are)", file=sys.stderr)
    sys.exit(2)
  app.run(guarded, argv=sys.argv, flags_parser=lambda argv: argv)
