"""``python -m diffsr.cli`` (and ``accelerate launch -m diffsr.cli``): the ``diffsr`` command."""

from diffsr.cli import main

if __name__ == "__main__":
    main()
