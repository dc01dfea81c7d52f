# -*- test-case-name: tests.test_unitfile -*-
"""
C{python -m txsdnotify unit [options] -- [sdweb options]}: the command line
lives in L{txsdnotify.cli.main}.
"""

import sys

from txsdnotify.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
