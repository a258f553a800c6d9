"""What the ``strands-trio`` commands share: argument types that refuse a bad port or host in
one line, and the ``--log-level`` / ``--log-format`` options with the JSON formatter behind
``--log-format json``."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import logging
import sys
from typing import Any, Final

__all__ = ["JsonFormatter", "add_log_options", "configure_logging", "host_arg", "port_arg"]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; anything else on a record came from ``extra=`` (the
# Logging middleware's event_type, client_id, outcome ...) and goes into the JSON object.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


def port_arg(value: str) -> int:
    """An argparse type: a TCP port, 0 (a free one) to 65535.

    Raises:
        argparse.ArgumentTypeError: not an integer in that range.
    """
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (0 to 65535)")
    return port


def host_arg(value: str) -> str:
    """An argparse type: an interface's address or name, not a URL (no scheme, no port).

    Raises:
        argparse.ArgumentTypeError: empty, with spaces, or with a scheme or a port.
    """
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise argparse.ArgumentTypeError(f"not a host name or address: {value!r}")
    if ":" in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a host name or address: {value!r} (give the port with its own option)"
            ) from None
    return value


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level`` and ``--log-format`` to a command's parser."""
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="how much to log to stderr (default: %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="text lines for people, or one JSON object per line for log pipelines: time, "
        "level, logger, message and the record's structured fields (default: %(default)s)",
    )


def configure_logging(args: argparse.Namespace) -> None:
    """Send the root logger's records at ``args.log_level`` and above to stderr, formatted
    as ``args.log_format`` asks; as :func:`logging.basicConfig`, nothing is changed if the
    root logger has handlers already (a host program's, or pytest's)."""
    handler = logging.StreamHandler(sys.stderr)
    json_format = getattr(args, "log_format", "text") == "json"
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(args, "log_level", "INFO"), handlers=[handler])


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, then every field the record was given with ``extra=`` (the
    Logging middleware's ``event_type``, ``client_id``, ``outcome``, ``duration_ms`` ...),
    and ``exception`` (the formatted traceback) when there is one. A value JSON cannot hold
    is written as its ``repr``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=repr, ensure_ascii=False)
