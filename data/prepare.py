"""Entry point for offline data preparation; same as `python -m hrm.data.prepare` (see data/README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrm.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
