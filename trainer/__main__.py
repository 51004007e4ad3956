"""`python -m trainer ...` → trainer.cli.main."""

import sys

from trainer.cli import main

sys.exit(main())
