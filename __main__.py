"""``python -m parcelscan`` (and ``torchrun -m parcelscan``) run the CLI."""

import sys

from parcelscan.cli import main

sys.exit(main())
