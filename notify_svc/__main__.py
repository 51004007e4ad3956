"""`python -m notify_svc` starts the notification service."""

from notify_svc.server import main

main()
