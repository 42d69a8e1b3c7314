"""`python -m treadle.scheduler` is `treadle scheduler`."""

import sys

from treadle.cli.__main__ import main

sys.exit(main(["scheduler", *sys.argv[1:]]))
