"""``python -m diffsr``: the ``diffsr`` command."""

from diffsr.cli import main

if __name__ == "__main__":
    main()
