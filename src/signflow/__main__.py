"""``python -m signflow ...``: the same as the ``signflow`` console script."""

import sys

from signflow.cli import main

sys.exit(main())
