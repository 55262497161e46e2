import sys

from zasync.cli import main

sys.exit(main())
