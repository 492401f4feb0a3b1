"""``python -m napari_xrayseg`` runs the ``xrayseg`` command line."""

import sys

from .cli import main

sys.exit(main())
