"""`python -m repedit.cli`."""

from repedit.cli import main

main()
