"""Peak host memory (RSS) of Mask R-CNN R-50-FPN training steps at
800x1216, ours vs torchvision, each side in its own process. Last line:
torchvision peak / ours (above 1: we use less).

  python bench/memory.py
"""
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def child(side):
  sys.path.insert(0, os.path.dirname(HERE))
  import bench.train_step as ts
  if side == "ours":  # random weights: torch is never imported here
    import jax
    step, state = ts.our_step(None)
    for _ in range(2):
      state = step(*state)
    jax.block_until_ready(state)
  else:
    step = ts.torchvision_step(ts.torchvision_model())
    for _ in range(2):
      step()
  print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def main():
  peaks = {}
  for side in ("torchvision", "ours"):
    out = subprocess.run([sys.executable, __file__, "--child", side],
                         capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(HERE))
    peaks[side] = int(out.stdout.strip().splitlines()[-1])
    print(f"{side:<12} peak RSS {peaks[side]:6d} MiB")
  sys.path.insert(0, os.path.dirname(HERE))
  from bench.common import machine
  print(f"machine: {machine()}")
  print(f"ratio: {peaks['torchvision'] / peaks['ours']:.3f}")


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--child":
    child(sys.argv[2])
  else:
    main()
