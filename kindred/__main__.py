"""`python -m kindred` is the `kindred` command."""

from kindred.cli import main

main()
