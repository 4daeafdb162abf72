"""``python -m geocells`` (also what ``torchrun -m geocells train`` runs)."""

import sys

from geocells.cli import main

sys.exit(main())
