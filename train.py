"""Train a detector: `python train.py --help` (or `scnet-train --help`)
prints the usage, scnet_jax/commands.py holds it."""
from scnet_jax.commands import train

if __name__ == "__main__":
  train()
