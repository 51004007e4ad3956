"""`python -m events_svc` runs the events service with settings from the environment."""

from events_svc.server import main

main()
