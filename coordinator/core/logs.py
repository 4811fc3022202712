"""Logging for the services: plain text or one JSON object per line (`--log-format json`), with
the job id and config key on every line that concerns a job, and never a password."""

from __future__ import annotations

import json
import logging
import re
import time

CONTEXT_FIELDS = ("job_id", "config_key", "attempt", "node")
_PASSWORD_IN_URL = re.compile(r"(rediss?://[^:/@\s]*:)[^@\s]+@")


def redact(text: str) -> str:
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None))
        line = super().format(record)
        return redact(f"{line} [{context}]" if context else line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry = {"ts": round(record.created, 3), "time": at, "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        entry.update({k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def configure(level: int, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def for_job(logger: logging.Logger, **context: object) -> logging.LoggerAdapter:
    """A logger whose every line carries the job's id and config (and whatever else is given)."""
    return logging.LoggerAdapter(logger, context)
