"""The download-only client: the least a connector must do, as its own process (the 1.00x row).

    python -m bench.download --base-url URL --token-file PATH --since RFC3339 [--streams a,b,c]

For each stream in turn: one ResetCursor `{"limit": 1000, "start_time": since}`, then cursor after
cursor until `has_more` is false, one request after another on one keep-alive connection
(`http.client`). Each body is parsed with orjson (what op-sentinel parses with) and discarded.
Prints one JSON line: {"pages", "events", "per_stream"}. Exit status 1 on any answer but 200.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import urllib.parse
from pathlib import Path

import orjson

STREAMS = ("auditevents", "signinattempts", "itemusages")
PAGE_SIZE = 1000


def download(base_url: str, token: str, since: str, streams: tuple[str, ...]) -> dict[str, object]:
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    pages = events = 0
    per_stream: dict[str, int] = {}
    try:
        for stream in streams:
            body: dict[str, object] = {"limit": PAGE_SIZE, "start_time": since}
            got = 0
            while True:
                conn.request("POST", f"/api/v2/{stream}", orjson.dumps(body), headers)
                response = conn.getresponse()
                raw = response.read()
                if response.status != 200:
                    raise SystemExit(f"download: {stream} answered {response.status}: {raw[:200]!r}")
                page = orjson.loads(raw)
                pages += 1
                got += len(page["items"])
                if not page["has_more"]:
                    break
                body = {"cursor": page["cursor"]}
            per_stream[stream] = got
            events += got
    finally:
        conn.close()
    return {"pages": pages, "events": events, "per_stream": per_stream}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.download")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--since", required=True)
    parser.add_argument("--streams", default=",".join(STREAMS))
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip()
    streams = tuple(s for s in args.streams.split(",") if s)
    result = download(args.base_url, token, args.since, streams)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
