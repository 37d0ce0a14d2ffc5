"""op-sentinel: 1Password Events API to Microsoft Sentinel or DuckDB, exactly once per event."""

from opsentinel.schema import COLUMN_NAMES, COLUMNS, TABLE_NAME
from opsentinel.streams import STREAM_NAMES, STREAMS, StreamSpec

__version__ = "0.1.0"

__all__ = ["COLUMNS", "COLUMN_NAMES", "STREAMS", "STREAM_NAMES", "TABLE_NAME", "StreamSpec", "__version__"]
