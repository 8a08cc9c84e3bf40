"""`python -m repedit.cli`."""

from . import main

main()
