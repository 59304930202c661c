"""``python -m psinspect``: the same as the ``psinspect`` console script."""

from psinspect._console import main

main()
