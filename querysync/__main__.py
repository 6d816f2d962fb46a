"""``python -m querysync`` runs the command line."""

import sys

from querysync.cli import main

sys.exit(main())
