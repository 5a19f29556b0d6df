"""``python bench/bench.py`` (the bench's older entry point): the same as ``python -m bench`` from the repository
root. Run as a script, it puts the repository root first on ``sys.path`` in place of ``bench/`` (so that
``import bench`` finds the package, not this file) and calls ``bench.cli.main``."""

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from bench.cli import main

    sys.exit(main())
