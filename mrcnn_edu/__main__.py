"""``python -m mrcnn_edu`` is the ``mrcnn-edu`` command."""
import sys

from .cli import main

sys.exit(main())
