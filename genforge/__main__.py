"""``python -m genforge`` (and ``torchrun -m genforge``): the command line."""

from genforge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
