"""`python -m retrieval_svc` starts the retrieval service."""

from retrieval_svc.server import main

main()
