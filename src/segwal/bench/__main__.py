"""``python -m segwal.bench``: the same command as ``segwal bench``."""

from segwal.bench.command import bench

if __name__ == "__main__":
    bench(prog_name="python -m segwal.bench")
