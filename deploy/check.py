#!/usr/bin/env python3
"""Validate the Kubernetes manifests offline.

    pip install -r deploy/requirements.txt
    python3 deploy/check.py              # all checks; prints `N passed, M failed`
    python3 deploy/check.py -v           # ... and every passing check
    python3 deploy/check.py --self-test  # the checker's own tests

Needs `kubectl` (for `kubectl kustomize`); no cluster, no network.
"""

import sys
from pathlib import Path

# No __pycache__ directories in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

from checks.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
