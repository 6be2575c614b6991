"""`python -m lbpair diff|render`: see lbpair.diff_cli."""

import sys

from lbpair.diff_cli import main

sys.exit(main())
