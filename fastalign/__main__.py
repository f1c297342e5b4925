"""``python -m fastalign ...`` is the ``fastalign`` command line."""
import sys

from fastalign.cli import main

sys.exit(main())
