"""``python -m decaf <command> ...``: the same as the ``decaf`` console script."""
import sys

from .tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
