"""`python -m ranking_svc` starts the ranking service."""

from ranking_svc.server import main

main()
