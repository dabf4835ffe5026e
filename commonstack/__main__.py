"""`python -m commonstack` is the `commonstack` command."""

from commonstack.cli import main

main()
