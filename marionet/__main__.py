import sys

from marionet.cli import main

# Guarded: spawned worker processes import this module as __mp_main__ and must not run the CLI.
if __name__ == "__main__":
    sys.exit(main())
