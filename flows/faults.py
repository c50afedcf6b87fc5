"""Opt-in fault injection for the chaos tests: kill this process at a named phase of a run.

A no-op unless ``YUQING_FAULT_POINT`` is set, as ``PHASE[:HIT[:DELAY_MS]]``: on the HIT-th
time (default 1) the run reaches PHASE, the process SIGKILLs itself after DELAY_MS
milliseconds (default 0). With a delay the kill comes from a timer thread while the run goes
on, so it lands somewhere inside the work that follows the phase (the DuckDB insert and
commit, the checkpoint and replica copy), not at a tidy boundary.

Phases: ``read`` (the next batch is about to be read from Kafka; with a delay the kill lands
while it is fetched, or just after, before anything is stored), ``inference`` (the model
is about to score a batch), ``insert`` (the store task, its inserts and commit, is about to
run), ``commit`` (inside the batch's transaction, every row inserted, right before
``COMMIT``; with a delay of a millisecond or two the kill lands inside the commit itself),
``checkpoint`` (the replica publish, checkpoint and file copy, is about to run) and
``replace`` (the replica copy is written, its rename is next).
"""

from __future__ import annotations

import os
import signal
import threading
import time

PHASES = ("read", "inference", "insert", "commit", "checkpoint", "replace")
_hits: dict[str, int] = {}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fault_point(phase: str) -> None:
    """Kill the process here if ``YUQING_FAULT_POINT`` names this phase and hit."""
    spec = os.environ.get("YUQING_FAULT_POINT")
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != phase:
        return
    hit_text, _, delay_text = rest.partition(":")
    _hits[phase] = _hits.get(phase, 0) + 1
    if _hits[phase] != int(hit_text or 1):
        return
    delay_s = float(delay_text or 0) / 1000
    if delay_s <= 0:
        _die()
    threading.Thread(target=lambda: (time.sleep(delay_s), _die()), daemon=True).start()
