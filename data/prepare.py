"""Entry point for offline data preparation; same as `python -m hrm.data.prepare` (see data/README.md)."""

import sys

from hrm.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
