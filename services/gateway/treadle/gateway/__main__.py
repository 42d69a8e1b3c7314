"""`python -m treadle.gateway` is `treadle gateway`."""

import sys

from treadle.cli.__main__ import main

sys.exit(main(["gateway", *sys.argv[1:]]))
