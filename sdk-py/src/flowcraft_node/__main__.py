"""``python -m flowcraft_node build``: the same as ``flowcraft-node-py build``."""

import sys

from .cli import main

sys.exit(main())
