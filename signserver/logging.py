"""structlog configuration: one event per line, JSON in production, readable on a console.

Records of the standard ``logging`` module (aiohttp, pyHanko, fontTools) go
through the same renderer, so a JSON log contains only JSON lines.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]

# Libraries that log per document at INFO or WARNING: pyHanko about fonts and
# about earlier signatures by CAs the service does not trust, fontTools about
# tables it does not subset. Their errors still reach the log.
_QUIET_LIBRARIES = ("pyhanko", "pyhanko_certvalidator", "fontTools")


def configure_logging(log_format: str = "console", level: int = logging.INFO) -> None:
    renderer: structlog.types.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per record, newline included: print() writes the newline separately, and the records of
        # several worker processes sharing one stderr then ran together on one line.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
