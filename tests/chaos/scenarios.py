"""The chaos scenarios. Each takes a ChaosEnv and sizes, and returns an Outcome with figures.

Guarantees checked everywhere: every id sent is in ``scored_news`` or ``dead_letters``
exactly once (0 lost, 0 duplicated), and the database is never left between two batches
(rows in news + dead letters == the sum of stored next offsets, for a stream without
redeliveries).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import duckdb

from tests.chaos.common import (
    ChaosEnv,
    LineWatcher,
    Outcome,
    audit,
    environment,
    news_value,
    produce_raw,
    wait_for_lock_release,
)

WORDS = {
    "negative": ["plunges", "slumps", "downgrade", "losses", "crash", "warning"],
    "neutral": ["reports", "schedules", "announces", "meeting", "update", "files"],
    "positive": ["soars", "upgrade", "record", "beats", "rally", "surges"],
}
TOPICS = ["oil", "crude", "fed", "rates", "earnings", "quarter"]


def headline(rng: random.Random, i: int) -> str:
    sentiment = rng.choice(list(WORDS))
    return f"{rng.choice(TOPICS)} {rng.choice(WORDS[sentiment])} item{i}"


def unique_topic(name: str) -> str:
    return f"chaos-{name}-{uuid.uuid4().hex[:8]}"


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def runs_until_caught_up(env: ChaosEnv, run_env: dict, *, limit: int = 5) -> tuple[int, list[str]]:
    """Run until a run reads nothing; returns (runs, errors)."""
    errors = []
    for count in range(1, limit + 1):
        summary, error = env.run_flow(run_env)
        if summary is None:
            errors.append(error)
        elif summary["messages_read"] == 0:
            return count, errors
    return limit, errors + ["did not catch up"]


def check_exactly_once(
    outcome: Outcome,
    db: Path,
    *,
    ids: list[str],
    dead_ids: list[str] = (),
    dead_raws=(),
    skipped: int = 0,
) -> None:
    """Figures and checks shared by every scenario: lost, duplicated, batch consistency."""
    found = audit(db)
    lost = found.lost(list(ids) + list(dead_ids), dead_raws)
    duplicated = found.duplicated()
    outcome.figures |= {
        "scored": found.news_count,
        "dead-lettered": found.dead_count,
        "lost": lost,
        "duplicated": duplicated,
    }
    outcome.check(lost == 0, "0 lost")
    outcome.check(duplicated == 0, "0 duplicated")
    wrong_place = sum(1 for i in dead_ids if found.scored[i]) + sum(
        1 for i in ids if found.dead_ids[i]
    )
    outcome.check(wrong_place == 0, "good messages scored, bad ones dead-lettered")
    outcome.check(
        found.news_count + found.dead_count + skipped == found.offsets_total,
        "rows stored (+ later copies of an id, skipped) == offsets stored (no half batch)",
    )


# --------------------------------------------------------------------------------------------
# 1. Crash: SIGKILL `yuqing run` at random moments and at named phases, restart, repeat.
# --------------------------------------------------------------------------------------------

KILL_PHASES = ("random", "read", "inference", "insert", "commit", "checkpoint", "replace")
# How long after its fault point a phase's kill lands (ms, uniform): through the fetch of a
# batch from Kafka; through the store task's inserts; through COMMIT itself (about 1.5 ms for
# a 500-row batch); through the checkpoint and the replica copy (5-100 ms). The other phases
# kill at the point.
KILL_DELAY_MS = {"read": 50.0, "insert": 40.0, "commit": 3.0, "checkpoint": 40.0}


def crash(
    env: ChaosEnv,
    *,
    messages: int = 100_000,
    kills: int = 50,
    phases: tuple[str, ...] = KILL_PHASES,
    batch: int = 500,
    bad_every: int = 97,
    seed: int = 0,
    log=lambda text: None,
) -> Outcome:
    rng = random.Random(seed)
    topic = unique_topic("crash")
    db = env.workdir / f"{topic}.duckdb"
    outcome = Outcome("crash", {"messages sent": messages})
    good, bad, values = [], [], []
    for i in range(messages):
        message_id = f"crash-{i}"
        if i % bad_every == bad_every - 1:  # a contract breach: dead-lettered, id still known
            bad.append(message_id)
            values.append(news_value(message_id, ""))
        else:
            good.append(message_id)
            values.append(news_value(message_id, headline(rng, i)))
    # The stream keeps flowing while the monitor is being killed.
    produce_raw(env.bootstrap, topic, values[: batch * 4])
    handed = [batch * 4]  # values handed to the producer; acknowledged within 2,000 (its chunk)

    def rest():
        for n, value in enumerate(values[batch * 4 :], start=batch * 4 + 1):
            yield value
            handed[0] = n

    producer = threading.Thread(
        target=produce_raw, args=(env.bootstrap, topic, rest()), daemon=True
    )
    producer.start()
    run_env = env.yuqing_env(topic=topic, db=db, read_batch_size=batch)
    killed, finished, errors, attempts, attempt_seconds = Counter(), 0, [], 0, []
    killed_at: list[int] = []  # messages stored (offsets) right after each kill
    started = time.monotonic()
    while sum(killed.values()) < kills and attempts < kills * 3:
        phase = phases[attempts % len(phases)]
        attempts += 1
        this_env = dict(run_env)
        if phase != "random":
            # Spread the kills over the whole stream: the remaining kills share what is left,
            # and a kill never waits for a batch that has not been produced yet.
            stored = _stored_offsets(db)
            per_kill = max(0, messages - stored) / batch / max(1, kills - sum(killed.values()))
            available = messages if not producer.is_alive() else max(batch * 4, handed[0] - 2000)
            hit = min(
                rng.randint(1, max(1, round(2 * per_kill))),
                max(1, (available - stored) // batch),
            )
            delay_ms = rng.uniform(0, KILL_DELAY_MS.get(phase, 0.0))
            this_env["YUQING_FAULT_POINT"] = f"{phase}:{hit}:{delay_ms:.1f}"
        attempt_started = time.monotonic()
        process = env.popen("run", env=this_env)
        watcher = LineWatcher(process, "reading")
        if phase == "random" and watcher.seen.wait(timeout=300):
            time.sleep(rng.uniform(0, 6))
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
        code = wait_for_lock_release(process, timeout=900)
        process.stdout.close()
        attempt_seconds.append(time.monotonic() - attempt_started)
        if code == -signal.SIGKILL:
            killed[phase] += 1
            killed_at.append(_stored_offsets(db))
        elif code == 0:
            finished += 1
        else:
            errors.append(last_line(watcher.text()))
        log(f"crash: attempt {attempts} ({phase}) exit {code}; kills so far {sum(killed.values())}")
    producer.join()
    before_catch_up = audit(db) if db.exists() else None
    catch_up_runs, catch_up_errors = runs_until_caught_up(env, run_env)
    errors += catch_up_errors
    outcome.figures |= {
        "kills": sum(killed.values()),
        "kills by phase": ", ".join(f"{p} {killed[p]}" for p in KILL_PHASES),
        "runs that finished before their kill": finished,
        "stored when killed (first / median / last)": (
            f"{killed_at[0]} / {int(statistics.median(killed_at))} / {killed_at[-1]}"
            if killed_at
            else "n/a"
        ),
        "stored by the killed runs": (
            before_catch_up.news_count + before_catch_up.dead_count if before_catch_up else 0
        ),
        "attempt, process start to exit (median / max)": (
            f"{statistics.median(attempt_seconds):.1f}s / {max(attempt_seconds):.1f}s"
            if attempt_seconds
            else "n/a"
        ),
        "clean runs to catch up": catch_up_runs,
        "errors": len(errors),
        "wall time": f"{time.monotonic() - started:.0f}s",
    }
    outcome.check(sum(killed.values()) >= kills, f"{kills} kills")
    outcome.check(not errors, "no run failed other than by SIGKILL: " + "; ".join(errors[:3]))
    check_exactly_once(outcome, db, ids=good, dead_ids=bad)
    replica_rows = _replica_count(env, db)
    outcome.figures["replica rows after the last run"] = replica_rows
    outcome.check(replica_rows == outcome.figures["scored"], "replica up to date after a run")
    return outcome


def _stored_offsets(db: Path) -> int:
    """Messages the database has accounted for (the sum of stored next offsets); no writer runs."""
    if not db.exists():
        return 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(
            con.execute("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets").fetchone()[0]
        )
    finally:
        con.close()


def _replica_count(env: ChaosEnv, db: Path) -> int:
    from storage.replica import replica_path_for

    con = duckdb.connect(str(replica_path_for(db)), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM news").fetchone()[0]
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# 2. Bad input: seeded fuzz of every contract breach, mixed with good and awkward-but-valid.
# --------------------------------------------------------------------------------------------


def fuzz_messages(
    rng: random.Random, count: int, *, huge: int = 3, huge_chars: int = 5_000_000
) -> list[tuple[str, bytes | None, bytes, str | None]]:
    """(expected outcome, key, value, id) for ``count`` fuzzed messages.

    Outcomes: 'dead' (a contract breach), 'scored' (awkward but valid: emoji, RTL, control
    characters), 'duplicate' (a later copy of an id with other text: the first copy wins).
    """
    out = []

    def dead(value: bytes) -> None:
        out.append(("dead", None, value, None))

    def valid(message_id: str, text: str, **extra) -> None:
        key, value = news_value(message_id, text, **extra)
        out.append(("scored", key, value, message_id))

    for n in range(huge):
        dead(json.dumps({"id": f"huge-{n}", "text": "x" * huge_chars}).encode())
    cases = [
        lambda i: dead(b"\xff\xfe" + f"invalid utf-8 {i}".encode() + b"\xc3\x28"),
        lambda i: dead(f"not json {i} {{".encode()),
        lambda i: dead(json.dumps([f"array {i}", i]).encode()),
        lambda i: dead(json.dumps(f"a bare string {i}").encode()),
        lambda i: dead(str(i).encode()),
        lambda i: dead(json.dumps({"text": f"id missing {i}"}).encode()),
        lambda i: dead(json.dumps({"id": "", "text": f"id empty {i}"}).encode()),
        lambda i: dead(json.dumps({"id": "   ", "text": f"id blank {i}"}).encode()),
        lambda i: dead(json.dumps({"id": i, "text": f"id not a string {i}"}).encode()),
        lambda i: dead(json.dumps({"id": [f"l{i}"], "text": f"id a list {i}"}).encode()),
        lambda i: dead(json.dumps({"id": f"nt-{i}"}).encode()),
        lambda i: dead(json.dumps({"id": f"et-{i}", "text": ""}).encode()),
        lambda i: dead(json.dumps({"id": f"ns-{i}", "text": i}).encode()),
        lambda i: dead(json.dumps({"id": f"nl-{i}", "text": ["a", "b"]}).encode()),
        lambda i: dead(json.dumps({"id": f"nul-{i}", "text": f"nul \x00 inside {i}"}).encode()),
        lambda i: dead(
            json.dumps({"id": f"ts-{i}", "text": "t", "published_at": "last tuesday"}).encode()
        ),
        lambda i: dead(
            json.dumps(
                {"id": f"tz-{i}", "text": "t", "published_at": "2026-11-20T10:00:00"}
            ).encode()
        ),
        lambda i: dead(
            json.dumps(
                {
                    "id": f"fut-{i}",
                    "text": "t",
                    "published_at": f"{rng.randint(2100, 9999)}-01-01T00:00:00Z",
                }
            ).encode()
        ),
        lambda i: dead(json.dumps({"id": f"tsn-{i}", "text": "t", "published_at": i}).encode()),
        lambda i: dead(json.dumps({"id": f"tk-{i}", "text": "t", "tickers": "XOM"}).encode()),
        lambda i: dead(("[" * 100_000 + f'"{i}"' + "]" * 100_000).encode()),
        lambda i: valid(f"emoji-{i}", f"oil 🚀📉 plunges 💥 item{i}"),
        lambda i: valid(f"rtl-{i}", f"النفط ينخفض بشدة item{i} \u202eoil plunges\u202c"),
        lambda i: valid(f"ctl-{i}", f"fed\x01\x07\x1b[31m rates\r\n\tupdate\x7f item{i}"),
        lambda i: valid(f"cjk-{i}", f"原油价格暴跌 oil crash item{i}", title="舆情"),
    ]
    for i in range(count - huge):
        if i % 50 == 49:  # the same id again, other text: first wins, this copy is dropped
            first = next(o for o in reversed(out) if o[0] == "scored")
            key, value = news_value(first[3], f"another text for {first[3]} {i}")
            out.append(("duplicate", key, value, first[3]))
        else:
            rng.choice(cases)(i)
    return out


def bad_input(
    env: ChaosEnv, *, fuzzed: int = 10_000, good: int = 2_000, huge: int = 3, seed: int = 0
) -> Outcome:
    rng = random.Random(seed)
    topic = unique_topic("bad-input")
    db = env.workdir / f"{topic}.duckdb"
    mixed = fuzz_messages(rng, fuzzed, huge=huge)
    mixed += [
        ("scored", *news_value(f"good-{i}", headline(rng, i)), f"good-{i}") for i in range(good)
    ]
    rng.shuffle(mixed)
    # Keep each duplicate after its first copy (same key, so same partition, later offset).
    firsts = [m for m in mixed if m[0] != "duplicate"]
    mixed = firsts + [m for m in mixed if m[0] == "duplicate"]
    produce_raw(env.bootstrap, topic, [(key, value) for _, key, value, _ in mixed])
    run_env = env.yuqing_env(topic=topic, db=db, read_batch_size=2000)
    started = time.monotonic()
    summary, error = env.run_flow(run_env)
    outcome = Outcome("bad-input", {"good sent": good, "fuzzed sent": fuzzed})
    outcome.check(summary is not None, f"the run completes: {error}")
    summary = summary or {}
    expected_texts = {
        message_id: json.loads(value)["text"]
        for kind, _, value, message_id in mixed
        if kind == "scored"
    }
    dead_raws = [value for kind, _, value, _ in mixed if kind == "dead"]
    duplicates = sum(1 for m in mixed if m[0] == "duplicate")
    check_exactly_once(
        outcome, db, ids=list(expected_texts), dead_raws=dead_raws, skipped=duplicates
    )
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = dict(con.execute("SELECT id, text FROM news").fetchall())
        reasons = con.execute("SELECT error FROM dead_letters").fetchall()
    finally:
        con.close()
    altered = sum(1 for i, text in expected_texts.items() if stored.get(i) != text)
    no_reason = sum(1 for (reason,) in reasons if not reason)
    kinds = Counter(reason.split(":")[0].split(" ")[0] for (reason,) in reasons)
    outcome.figures |= {
        "awkward-but-valid scored": sum(1 for i in expected_texts if not i.startswith("good-")),
        "same id again (first wins)": duplicates,
        "duplicates counted by the run": summary.get("duplicates"),
        "5 MB texts": huge,
        "texts altered": altered,
        "dead letters without a reason": no_reason,
        "reasons (first word)": ", ".join(f"{k} {n}" for k, n in kinds.most_common(6)),
        "wall time": f"{time.monotonic() - started:.0f}s",
    }
    outcome.check(altered == 0, "good messages stored unaltered (first copy of an id wins)")
    outcome.check(no_reason == 0, "every dead letter has a reason")
    outcome.check(
        outcome.figures["dead-lettered"] == len(dead_raws), "every bad message dead-lettered"
    )
    outcome.check(summary.get("duplicates") == duplicates, "later copies counted as duplicates")
    return outcome


# --------------------------------------------------------------------------------------------
# 3. Broker outage: SIGSTOP the broker before a run, as it starts and in the middle of reading.
# --------------------------------------------------------------------------------------------


OUTAGES = ("before the run", "as the run starts", "mid-read")


def broker_outage(
    env: ChaosEnv,
    *,
    messages: int = 300,
    padding: int = 1_100,
    timeout_s: float = 3.0,
    when: tuple[str, ...] = OUTAGES,
) -> Outcome:
    """Needs env.broker. Padding: 10 kB messages (dead-lettered by a 2,000-character limit, so
    they cost no inference) that make the stream larger than one 8 MB fetch, so the reader
    must go back to the broker after the pause."""
    broker = env.broker
    topic = unique_topic("outage")
    db = env.workdir / f"{topic}.duckdb"
    rng = random.Random(1)
    good = [f"outage-{i}" for i in range(messages)]
    pad = [f"pad-{i}" for i in range(padding)]
    values = [news_value(i, headline(rng, n)) for n, i in enumerate(good)]
    values += [news_value(i, "x" * 10_000) for i in pad]
    rng.shuffle(values)
    produce_raw(env.bootstrap, topic, values, partitions=1)
    run_env = env.yuqing_env(
        topic=topic,
        db=db,
        read_batch_size=100,
        kafka_timeout_s=timeout_s,
        kafka_connect_attempts=2,
        max_text_chars=2000,
    )
    outcome = Outcome("broker-outage", {"messages sent": messages + padding})
    failures = []
    for moment in when:
        needle = {"as the run starts": "Beginning flow run", "mid-read": "batch stored"}.get(moment)
        if needle is None:
            broker.pause()
        started = time.monotonic()
        process = env.popen("run", env=run_env)
        watcher = LineWatcher(process, needle or "\x00never")
        try:
            if needle is not None:
                if not watcher.seen.wait(timeout=300):
                    outcome.check(False, f"{moment}: the run never reached {needle!r}")
                broker.pause()
            code = wait_for_lock_release(process, timeout=600)
        finally:
            broker.resume()
        process.stdout.close()
        seconds = time.monotonic() - started
        message = last_line(watcher.text())
        failures.append(f"{moment}: exit {code} after {seconds:.0f}s")
        outcome.check(code == 1, f"{moment}: the run fails (exit {code})")
        outcome.check(
            message.startswith("yuqing run: run failed:") and "Kafka" in message,
            f"{moment}: one clear line ({message!r})",
        )
        found = audit(db) if db.exists() else None
        if found is not None:
            outcome.check(
                found.news_count + found.dead_count == found.offsets_total,
                f"{moment}: nothing half-done",
            )
        outcome.figures[moment] = f"exit {code} in {seconds:.0f}s: {message[:240]}"
    outcome.figures["stored before catch-up"] = (
        audit(db).news_count + audit(db).dead_count if db.exists() else 0
    )
    runs, errors = runs_until_caught_up(env, run_env)
    outcome.figures["runs to catch up"] = runs
    outcome.check(not errors, "the next run catches up: " + "; ".join(errors))
    check_exactly_once(outcome, db, ids=good, dead_ids=pad)
    return outcome


# --------------------------------------------------------------------------------------------
# 4. Notifier outage: the webhook answers 500, then is gone, then comes back.
# --------------------------------------------------------------------------------------------


def notifier_outage(env: ChaosEnv) -> Outcome:
    """Runs the flow in this process (needs an active Prefect API)."""
    from flows.monitor import monitor
    from infra.webhook import WebhookReceiver
    from storage.db import connect
    from tests.conftest import encode, surge_messages

    topic = unique_topic("notify")
    db = env.workdir / f"{topic}.duckdb"
    receiver = WebhookReceiver(status=500).start()
    port = receiver.port
    produce_raw(env.bootstrap, topic, [(None, encode(m)) for m in surge_messages(prefix=topic)])
    outcome = Outcome("notifier-outage")
    values = env.yuqing_env(topic=topic, db=db, alert_urls=receiver.url("/hooks/yuqing"))
    try:
        with environment(values):
            first = monitor()  # webhook answers 500
            raised = first["alerts_raised"]
            receiver.stop()  # webhook gone: connection refused
            second = monitor()
            receiver = WebhookReceiver(port=port).start()  # back, same address
            third = monitor()
            delivered_on_return = len(receiver.received)
            fourth = monitor()  # a re-run
            con = connect(db)
            con.execute("DELETE FROM consumer_offsets")  # a backfill: re-read the whole topic
            con.close()
            backfill = monitor()
    finally:
        receiver.stop()
    con = duckdb.connect(str(db), read_only=True)
    try:
        alert_ids = [a for (a,) in con.execute("SELECT alert_id FROM alerts").fetchall()]
        pending = con.execute("SELECT count(*) FROM alerts WHERE notified_at IS NULL").fetchone()[0]
    finally:
        con.close()
    # The idempotency key: a payload field and a header, both the alert's id.
    keys = [r["payload"].get("idempotency_key") for r in receiver.received]
    headers_match = all(r.get("idempotency_key") == r["payload"].get("idempotency_key")
                        for r in receiver.received)  # fmt: skip
    per_alert = Counter(k for k in keys if k in alert_ids)
    outcome.figures |= {
        "alerts raised": raised,
        "pending while 500": first["alerts_pending"],
        "pending while down": second["alerts_pending"],
        "delivered on return": delivered_on_return,
        "delivered by the re-run": len(receiver.received) - delivered_on_return,
        "raised / delivered by a backfill": f"{backfill['alerts_raised']} / {backfill['alerts_notified']}",
        "idempotency key": "payload idempotency_key = Idempotency-Key header = alert_id"
        if headers_match and len(per_alert) == len(keys)
        else "missing or mismatched",
        "delivered twice": sum(1 for n in per_alert.values() if n > 1),
        "never delivered": sum(1 for a in alert_ids if per_alert[a] == 0),
        "pending at the end": pending,
    }
    outcome.check(raised >= 1, "the surge raises an alert")
    outcome.check(
        first["alerts_notified"] == 0 and first["alerts_pending"] == raised, "500: pending"
    )
    outcome.check(
        second["alerts_notified"] == 0 and second["alerts_pending"] == raised, "down: pending"
    )
    outcome.check(third["alerts_notified"] == raised == delivered_on_return, "delivered on return")
    outcome.check(fourth["alerts_notified"] == 0 and backfill["alerts_notified"] == 0, "no resend")
    outcome.check(
        backfill["alerts_raised"] == 0 and backfill["scored"] == 0, "backfill adds nothing"
    )
    outcome.check(len(keys) == len(alert_ids) == raised, "one delivery per alert")
    outcome.check(all(per_alert[a] == 1 for a in alert_ids), "each alert_id is one payload's key")
    outcome.check(headers_match, "the Idempotency-Key header equals the payload's key")
    outcome.check(pending == 0, "nothing left pending")
    return outcome


# --------------------------------------------------------------------------------------------
# 5. Analysts during writes: queries on the replica while runs write continuously.
# --------------------------------------------------------------------------------------------

# Each analyst query checks one committed state (rows == offsets) and measures freshness: how
# old the newest row it can see is (the stream never pauses, so that is the analysts' lag).
CONSISTENCY_SQL = (
    "SELECT (SELECT count(*) FROM news) + (SELECT count(*) FROM dead_letters) AS stored, "
    "(SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets) AS offsets, "
    "epoch(now()) - epoch((SELECT max(ingested_at) FROM news)) AS age_s"
)

NOTEBOOK = textwrap.dedent(
    """
    import json, sys, time, duckdb
    path, queries, sql, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    errors = inconsistent = 0
    states, ages = set(), []
    for _ in range(queries):
        try:
            con = duckdb.connect(path, read_only=True)
            stored, offsets, age_s = con.execute(sql).fetchone()
            con.close()
            inconsistent += stored != offsets
            states.add(stored)
            ages.append(age_s)
        except duckdb.Error as e:
            errors += 1
            print("ERROR", " ".join(str(e).split()), file=sys.stderr)
        time.sleep(pause)
    print(json.dumps({"errors": errors, "inconsistent": inconsistent, "states": len(states),
                      "ages": ages}))
    """
)


def _spread(values: list[float]) -> str:
    """'median / p95 / max' of some seconds."""
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.median(ordered):.1f}s / {p95:.1f}s / {ordered[-1]:.1f}s"


def analysts(
    env: ChaosEnv,
    *,
    queries: int = 1_000,
    cli_queries: int = 500,
    per_second: int = 100,
    spread_s: float | None = None,
) -> Outcome:
    """The notebook spreads its queries over about ``spread_s`` seconds (default: about as
    long as the yuqing sql queries, which run back to back meanwhile), so both paths see the
    runs' writes land."""
    if spread_s is None:
        spread_s = max(15.0, 1.0 * cli_queries)
    from storage.replica import replica_path_for

    topic = unique_topic("analysts")
    db = env.workdir / f"{topic}.duckdb"
    rng = random.Random(5)
    run_env = env.yuqing_env(topic=topic, db=db, read_batch_size=100)
    sent = []
    stop = threading.Event()

    def stream() -> None:  # new news keeps arriving
        n = 0
        while not stop.is_set():
            chunk = [news_value(f"an-{n + k}", headline(rng, n + k)) for k in range(per_second)]
            produce_raw(env.bootstrap, topic, chunk)
            sent.extend(f"an-{n + k}" for k in range(per_second))
            n += per_second
            stop.wait(1.0)

    runs = Counter()

    def schedule() -> None:  # scheduled runs, back to back
        while not stop.is_set():
            done = env.yuqing("run", env=run_env, timeout=900)
            runs["ok" if done.returncode == 0 else "failed"] += 1

    producer = threading.Thread(target=stream, daemon=True)
    producer.start()
    writer = threading.Thread(target=schedule, daemon=True)
    writer.start()
    replica = replica_path_for(db)
    deadline = time.monotonic() + 600
    while not replica.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    started = time.monotonic()
    notebook = subprocess.Popen(
        [
            sys.executable,
            "-c",
            NOTEBOOK,
            str(replica),
            str(queries - cli_queries),
            CONSISTENCY_SQL,
            str(max(0.01, spread_s / max(1, queries - cli_queries))),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cli_errors, cli_inconsistent, cli_states, cli_ages = [], 0, set(), []
    for _ in range(cli_queries):
        done = env.yuqing("sql", "--db", str(db), "--format", "json", CONSISTENCY_SQL, env=run_env)
        if done.returncode != 0:
            cli_errors.append(last_line(done.stderr))
            continue
        row = json.loads(done.stdout)[0]
        cli_inconsistent += row["stored"] != row["offsets"]
        cli_states.add(row["stored"])
        cli_ages.append(row["age_s"])
    out, err = notebook.communicate(timeout=900)
    query_seconds = time.monotonic() - started
    stop.set()
    producer.join()
    writer.join()
    report = json.loads(out.strip().splitlines()[-1])
    nb_errors, nb_inconsistent, nb_states = (
        report["errors"],
        report["inconsistent"],
        report["states"],
    )
    outcome = Outcome(
        "analysts",
        {
            "queries (notebook / yuqing sql)": f"{queries - cli_queries} / {cli_queries}",
            "errors": nb_errors + len(cli_errors),
            "inconsistent snapshots": nb_inconsistent + cli_inconsistent,
            "distinct states seen (notebook / sql)": f"{nb_states} / {len(cli_states)}",
            "newest row seen, age (median / p95 / max)": _spread(report["ages"] + cli_ages),
            "runs during the queries (ok / failed)": f"{runs['ok']} / {runs['failed']}",
            "query phase": f"{query_seconds:.0f}s",
            "messages sent": len(sent),
        },
    )
    outcome.check(nb_errors == 0, f"notebook queries without error {err[-300:]}")
    outcome.check(not cli_errors, "yuqing sql without error: " + "; ".join(cli_errors[:3]))
    outcome.check(nb_inconsistent + cli_inconsistent == 0, "every query sees one committed state")
    outcome.check(nb_states >= 2, "the analysts really saw the data move")
    if cli_queries >= 20:
        outcome.check(len(cli_states) >= 2, "yuqing sql saw the data move too")
    outcome.check(runs["failed"] == 0, "no run failed")
    runs_until_caught_up(env, run_env)
    check_exactly_once(outcome, db, ids=sent)
    return outcome


# --------------------------------------------------------------------------------------------
# 6. Disk full: the run may not grow any file (RLIMIT_FSIZE -> EFBIG), then it may.
# --------------------------------------------------------------------------------------------


def disk_full(env: ChaosEnv, *, first: int = 500, second: int = 2_000) -> Outcome:
    from storage.replica import replica_path_for

    topic = unique_topic("disk-full")
    db = env.workdir / f"{topic}.duckdb"
    rng = random.Random(6)
    ids = [f"df-{i}" for i in range(first + second)]
    run_env = env.yuqing_env(topic=topic, db=db, read_batch_size=500)
    produce_raw(
        env.bootstrap, topic, [news_value(i, headline(rng, n)) for n, i in enumerate(ids[:first])]
    )
    outcome = Outcome("disk-full", {"messages sent": first + second})
    summary, error = env.run_flow(run_env)
    outcome.check(summary is not None, f"a first run fills the database: {error}")
    produce_raw(
        env.bootstrap, topic, [news_value(i, headline(rng, n)) for n, i in enumerate(ids[first:])]
    )
    before = audit(db)
    limit = db.stat().st_size + 16 * 1024

    def no_room() -> None:  # in the child: files may not grow past `limit` bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = env.yuqing("run", env=run_env, preexec_fn=no_room)
    message = last_line(full.stderr)
    after = audit(db)
    replica = replica_path_for(db)
    leftovers = list(db.parent.glob(f".{replica.name}.*.tmp"))
    outcome.figures |= {
        "stored before": before.news_count,
        "full run": f"exit {full.returncode}: {message[:240]}",
        "stored after the failed run": after.news_count,
        "temporary files left": len(leftovers),
    }
    outcome.check(full.returncode == 1, "the run fails")
    outcome.check(
        message.startswith("yuqing run: run failed:") and "Traceback" not in full.stderr,
        "one clear line",
    )
    outcome.check(
        after.news_count + after.dead_count == after.offsets_total,
        "no partial state after the failure",
    )
    outcome.check(not leftovers, "no temporary replica files left")
    runs, errors = runs_until_caught_up(env, run_env)
    outcome.check(not errors, "the next run recovers: " + "; ".join(errors))
    check_exactly_once(outcome, db, ids=ids)
    return outcome


# --------------------------------------------------------------------------------------------
# 7. DB unwritable: the file read-only, its folder read-only, the file held by another process.
# --------------------------------------------------------------------------------------------

UNWRITABLE = ("read-only file", "read-only folder", "held by another writer", "held by a reader")
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE = 24, 1
_LIBC = ctypes.CDLL(None, use_errno=True)
HOLDER = (
    "import sys, time, duckdb; con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'ro'); "
    "print('holding', flush=True); time.sleep(3600)"
)


def permissions_bind() -> None:
    """In a child before exec: as root, drop CAP_DAC_OVERRIDE so file modes bind, as for any
    other user (root ignores them otherwise); for other users this changes nothing."""
    if os.geteuid() == 0:
        _LIBC.prctl(_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, 0, 0, 0)


def permissions_enforced(folder: Path) -> bool:
    """Whether a child started with permissions_bind() is refused a write to a 0444 file."""
    probe = folder / ".permission-probe"
    probe.write_text("")
    probe.chmod(0o444)
    try:
        done = subprocess.run(
            [sys.executable, "-c", f"open({str(probe)!r}, 'a')"],
            preexec_fn=permissions_bind,
            capture_output=True,
        )
        return done.returncode != 0
    finally:
        probe.chmod(0o644)
        probe.unlink()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def db_unwritable(
    env: ChaosEnv, *, first: int = 300, per_case: int = 500, cases: tuple[str, ...] = UNWRITABLE
) -> Outcome:
    """One database, one fault after another: each run under a fault must fail with one line
    and change nothing; the next run (fault lifted) stores what it missed, exactly once."""
    topic = unique_topic("unwritable")
    folder = env.workdir / topic
    folder.mkdir(parents=True)
    db = folder / "yuqing.duckdb"
    rng = random.Random(7)
    ids: list[str] = []
    run_env = env.yuqing_env(topic=topic, db=db, read_batch_size=200, db_lock_timeout_s=2)

    def produce_more(count: int) -> None:
        new = [f"uw-{len(ids) + k}" for k in range(count)]
        produce_raw(
            env.bootstrap, topic, [news_value(i, headline(rng, n)) for n, i in enumerate(new)]
        )
        ids.extend(new)

    outcome = Outcome("db-unwritable", {"messages sent": 0})
    produce_more(first)
    summary, error = env.run_flow(run_env)
    outcome.check(summary is not None, f"a first run fills the database: {error}")
    enforced = permissions_enforced(folder)
    for case in cases:
        if case.startswith("read-only") and not enforced:
            outcome.figures[case] = (
                "skipped: file modes do not bind here (root without CAP_SETPCAP)"
            )
            continue
        produce_more(per_case)
        before, digest = audit(db), _digest(db)
        holder = None
        if case == "read-only file":
            db.chmod(0o444)
        elif case == "read-only folder":
            folder.chmod(0o555)
        else:
            mode = "rw" if case == "held by another writer" else "ro"
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(db), mode], stdout=subprocess.PIPE, text=True
            )
            holder.stdout.readline()
        started = time.monotonic()
        try:
            failed = env.yuqing("run", env=run_env, preexec_fn=permissions_bind)
        finally:
            db.chmod(0o644)
            folder.chmod(0o755)
            if holder is not None:
                holder.kill()
                holder.wait()
                holder.stdout.close()
        seconds = time.monotonic() - started
        message = last_line(failed.stderr)
        after = audit(db)
        leftovers = [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".wal"))]
        unchanged = _digest(db) == digest
        shown = message.replace(str(folder), "…")
        outcome.figures[case] = f"exit {failed.returncode} in {seconds:.0f}s: {shown[:300]}"
        outcome.check(failed.returncode == 1, f"{case}: the run fails (exit {failed.returncode})")
        outcome.check(
            message.startswith("yuqing run: run failed:") and "Traceback" not in failed.stderr,
            f"{case}: one clear line ({message!r})",
        )
        outcome.check(
            (after.news_count, after.dead_count, after.offsets_total)
            == (before.news_count, before.dead_count, before.offsets_total)
            and unchanged,
            f"{case}: nothing stored, the file unchanged",
        )
        outcome.check(not leftovers, f"{case}: no temporary or WAL file left ({leftovers})")
        runs, errors = runs_until_caught_up(env, run_env)
        recovered = audit(db)
        outcome.figures[f"{case}: next run"] = (
            f"{errors[0] if errors else 'ok'}; stored {recovered.news_count - after.news_count} "
            f"more in {runs} run(s)"
        )
        outcome.check(not errors, f"{case}: the next run recovers: " + "; ".join(errors))
    outcome.figures["messages sent"] = len(ids)
    check_exactly_once(outcome, db, ids=ids)
    return outcome
