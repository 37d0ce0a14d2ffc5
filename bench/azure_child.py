"""The local Azure fakes in a child process, for the Sentinel benchmark.

    python -m bench.azure_child

Starts `FakeManagedIdentity` and `FakeLogsIngestion` (tests/fakes: HTTPS with a trustme CA, only
tokens the fake identity issued are accepted) and prints one JSON line:
{"endpoint", "dcr_id", "ca_path", "env"} (`env`: the variables that point azure-identity at the fake
identity). Then, per line read on stdin: `report` prints one JSON line with every request answered
since the last report, as [status, content_length, content_encoding, uncompressed_size, records].
End of input stops both fakes and exits.

A child process keeps the fake's gunzip + JSON parsing off the measured process's GIL. Accepted
records are counted, not kept (the fake would otherwise hold every record in memory).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.azure_identity import FakeManagedIdentity  # noqa: E402
from tests.fakes.azure_ingestion import FakeLogsIngestion, Upload  # noqa: E402


class CountingIngestion(FakeLogsIngestion):
    """FakeLogsIngestion that records each request (`uploads`) but drops the accepted records."""

    def _record(self, upload: Upload, records: list[dict[str, Any]] | None) -> None:
        super()._record(upload, None)


def main() -> int:
    with (
        FakeManagedIdentity() as identity,
        CountingIngestion(token_ok=identity.token_ok) as ingestion,
    ):
        hello = {
            "endpoint": ingestion.endpoint,
            "dcr_id": ingestion.dcr_id,
            "ca_path": ingestion.ca_path,
            "env": identity.env(),
        }
        print(json.dumps(hello), flush=True)
        reported = 0
        for line in sys.stdin:
            if line.strip() != "report":
                continue
            uploads = ingestion.uploads
            fresh = uploads[reported:]
            reported = len(uploads)
            rows = [
                [u.status, u.content_length, u.content_encoding, u.uncompressed_size, u.records]
                for u in fresh
            ]
            print(json.dumps(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
