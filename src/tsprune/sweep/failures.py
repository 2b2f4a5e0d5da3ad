"""Why a run failed, in two classes, and whether the next ``sweep run`` retries it by itself.

* ``deterministic``: the run itself, the same on every try: a diverged training, a structured target out of reach,
  an invalid configuration, a bug. It stays recorded until ``--retry-failed``.
* ``environmental``: the machine, not the run: out of disk (``ENOSPC``, ``EDQUOT``, a safetensors write that says
  "No space left on device") or memory (``MemoryError``, ``ENOMEM``, an allocator's "out of memory"), an I/O error,
  a worker process killed, a Ray worker or node lost. Running the same command again retries it by itself, until
  its record has :data:`ENVIRONMENTAL_ATTEMPTS` attempts; after that it too waits for ``--retry-failed``.

A failed record says its class (``failure``) and, when environmental, the limit (``max_attempts``); its ``attempt``
counts how many times the run was recorded. Records written before classes existed are classified by their error
text (:func:`classify_error`).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from tsprune.errors import TsPruneError

DETERMINISTIC, ENVIRONMENTAL = "deterministic", "environmental"
FAILURE_CLASSES = (DETERMINISTIC, ENVIRONMENTAL)
ENVIRONMENTAL_ATTEMPTS = 3  # recorded attempts of a run failing for environmental reasons before `sweep run` stops

# OSError codes that say the machine is short of something (disk, memory, file handles) or its storage failed.
ENVIRONMENTAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS, errno.ENFILE,
                                  errno.EMFILE, errno.ESTALE})
# What such errors look like in a message (a library that wraps an OSError into its own exception keeps its text:
# safetensors' SafetensorError, torch's allocator), lower case.
ENVIRONMENTAL_TEXT = (*(os.strerror(code).lower() for code in sorted(ENVIRONMENTAL_ERRNOS)), "out of memory",
                      "can't allocate memory", "workercrashed", "worker process died", "node died")
# Exception type names (from libraries this module does not import) that mean a lost worker or node.
ENVIRONMENTAL_TYPES = frozenset({"MemoryError", "OutOfMemoryError", "BrokenProcessPool", "WorkerCrashedError",
                                 "NodeDiedError", "ActorDiedError", "OwnerDiedError", "ObjectLostError",
                                 "ObjectReconstructionFailedError", "LocalRayletDiedError", "RaySystemError"})


def classify(exc: BaseException) -> str:
    """The class of a failure raised as ``exc``: environmental when it, or an exception it was raised from, is the
    machine's (see the module doc); deterministic otherwise (a :class:`TsPruneError` is the run's own, unless it
    was raised from an environmental error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _environmental(current):
            return ENVIRONMENTAL
        current = current.__cause__ if current.__cause__ is not None or current.__suppress_context__ \
            else current.__context__
    return DETERMINISTIC


def _environmental(exc: BaseException) -> bool:
    if any(kind.__name__ in ENVIRONMENTAL_TYPES for kind in type(exc).__mro__):
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in ENVIRONMENTAL_ERRNOS
    if isinstance(exc, TsPruneError):
        return False
    return _environmental_text(str(exc))


def _environmental_text(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in ENVIRONMENTAL_TEXT)


def classify_error(error: object) -> str:
    """The class of a recorded error text (for records written before classes were recorded)."""
    text = str(error or "")
    name = text.split(":", 1)[0].strip()
    if name in ENVIRONMENTAL_TYPES or _environmental_text(text):
        return ENVIRONMENTAL
    return DETERMINISTIC


def failure_of(record: dict[str, Any]) -> str | None:
    """A record's failure class: None for a finished run, else the class it records (or its error text gives)."""
    if record.get("status") == "done":
        return None
    recorded = record.get("failure")
    return recorded if recorded in FAILURE_CLASSES else classify_error(record.get("error"))


def mark_failed(record: dict[str, Any], failure: str) -> dict[str, Any]:
    """``record`` (a failed run's) with its class, and for an environmental one the attempts allowed."""
    record["failure"] = failure
    if failure == ENVIRONMENTAL:
        record["max_attempts"] = ENVIRONMENTAL_ATTEMPTS
    return record


def retried_by_itself(record: dict[str, Any]) -> bool:
    """Whether the next ``sweep run`` retries this recorded run without ``--retry-failed``: an environmental
    failure with fewer than its allowed attempts."""
    if failure_of(record) != ENVIRONMENTAL:
        return False
    allowed = int(record.get("max_attempts") or ENVIRONMENTAL_ATTEMPTS)
    return int(record.get("attempt") or 1) < allowed


def to_retry(record: dict[str, Any], retry_failed: bool) -> bool:
    """Whether a run with this record runs again: a failed one with ``retry_failed``, or one retried by itself."""
    return record.get("status") != "done" and (retry_failed or retried_by_itself(record))
