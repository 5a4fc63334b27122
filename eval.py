"""Evaluate a checkpoint: `python eval.py --help` (or `scnet-eval --help`)
prints the usage, scnet_jax/commands.py holds it."""
from scnet_jax.commands import evaluate

if __name__ == "__main__":
  evaluate()
