"""`python -m explorer`: the `explorer` command where its script is not on PATH, and the module torchrun runs
(`torchrun ... -m explorer -- train ...`). Through launch.main, so that a Ctrl-C while the command line's modules
import exits 130 with one line (`python -m explorer.cli` imports them before any handler is in place)."""
import sys

from explorer.launch import main

sys.exit(main())
