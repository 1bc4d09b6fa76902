#!/usr/bin/env python
"""Extract CLIP/VGGish features of videos and questions into HDF5 (same as `avmaster extract`).

    python tools/extract_features.py --videos VIDEOS --annotations A.json --out features

See `--help` and features/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avmaster.extract.runner import main

if __name__ == "__main__":
    sys.exit(main())
