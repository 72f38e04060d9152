"""`python -m parallax` is the `parallax` command."""

import sys

from parallax.cli import main

sys.exit(main())
