import sys

from an_lab.cli import main

sys.exit(main())
