"""``python -m flows``: the extract-and-train flow on the demo data, locally (see flows/demo.py)."""

import sys

from flows.demo import cli

if __name__ == "__main__":  # guarded: Dask's spawned worker processes import this module again
    sys.exit(cli())
