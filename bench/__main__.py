"""`python -m bench [all|prerendered|backfill|pipeline|memory|sentinel] [--quick] [options]`.

See bench/README.md.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `tests.fakes` and `bench` must be importable from any directory
    sys.path.insert(0, str(ROOT))

from bench.cli import entry  # noqa: E402
from opsentinel.runtime import tune_process  # noqa: E402

tune_process()  # as the `op-sentinel` command does: the figures are the command's

sys.exit(entry())
