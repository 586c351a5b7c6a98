"""``python -m segwal``: the same command as ``segwal``."""

from segwal.cli import main

if __name__ == "__main__":
    main(prog_name="segwal")
