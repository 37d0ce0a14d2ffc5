"""One error hierarchy for op-sentinel.

    OpSentinelError
    ├── UserError                 a problem the user can fix; the CLI prints str(exc) as one line, exits 2
    │   ├── ConfigError           bad setting, file or flag
    │   ├── AuthError             token rejected (401) or lacking every requested feature
    │   └── StoreError            the store is missing, locked too long, read-only, full or corrupt
    ├── RetriableError            worth retrying after a wait (429, 5xx, timeouts, connection errors)
    │   └── RateLimited           429; carries the server's Retry-After when it sent one
    ├── FatalError                retrying cannot help (400 on a ResetCursor, malformed body after retries)
    │   └── CursorRejected        400 on a continuing cursor: fall back to a ResetCursor
    ├── CheckpointConflict        commit-if-unchanged failed: nothing stored
    │   └── LeaseLost             this process no longer owns the unit (Blob state): nothing stored
    └── LeaseHeld                 another replica holds the unit's lease (Blob state)

Exceptions from httpx, duckdb and azure are translated to these at one boundary per library and
chained with `raise ... from exc`. No message ever carries the API token or a response body verbatim.
"""

from __future__ import annotations


class OpSentinelError(Exception):
    """Base of every error op-sentinel raises on purpose."""


class UserError(OpSentinelError):
    """The user can fix this; `str()` is one clear line for the CLI."""


class ConfigError(UserError):
    pass


class AuthError(UserError):
    pass


class StoreError(UserError):
    pass


class RetriableError(OpSentinelError):
    """Transient: retry after backoff."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(RetriableError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class FatalError(OpSentinelError):
    """Retrying the same request cannot succeed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CursorRejected(FatalError):
    """The server refused a stored cursor (400); the stream must restart from a ResetCursor."""


class CheckpointConflict(OpSentinelError):
    """A checkpoint changed under us (another replica committed first); commit-if-unchanged failed."""


class LeaseLost(CheckpointConflict):
    """This process no longer owns the (account, stream) unit: its lease was lost, broken, ran out,
    or was released. Nothing was stored; the unit's worker must stop sending at once."""


class LeaseHeld(OpSentinelError):
    """Another replica holds the unit's lease; `owner` is its replica id when the unit names one."""

    def __init__(self, account: str, stream: str, owner: str | None) -> None:
        who = f"replica {owner}" if owner else "another replica"
        super().__init__(f"{stream} (account {account}) is held by {who}")
        self.account = account
        self.stream = stream
        self.owner = owner
