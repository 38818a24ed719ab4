"""`python -m ticklens.emulator`: the local Binance-compatible feed (as `ticklens feed`)."""

import sys

from ticklens.emulator.cli import main

sys.exit(main())
