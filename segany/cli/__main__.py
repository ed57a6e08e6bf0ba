"""``python -m segany.cli`` runs the ``segany`` command."""

import sys

from segany.cli import main

sys.exit(main())
