"""Versioned schema migrations.

Each migration has a number and a name and runs in one transaction together with the row
that records it in ``schema_migrations``, so a crash leaves the schema at a known version.
Migrations are append-only: never edit one that has shipped, add the next number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb

from storage.views import ANALYST_VIEWS_V3

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema: news, dead letters, alerts, offsets, runs",
        """
        CREATE TABLE news (
            id              VARCHAR PRIMARY KEY,
            published_at    TIMESTAMPTZ NOT NULL,
            source          VARCHAR,
            title           VARCHAR,
            text            VARCHAR NOT NULL,
            url             VARCHAR,
            lang            VARCHAR,
            tickers         VARCHAR[],
            sentiment       VARCHAR NOT NULL,
            sentiment_score DOUBLE NOT NULL,
            topic           VARCHAR NOT NULL,
            topic_score     DOUBLE NOT NULL,
            model_version   VARCHAR NOT NULL,
            kafka_topic     VARCHAR NOT NULL,
            kafka_partition INTEGER NOT NULL,
            kafka_offset    BIGINT NOT NULL,
            ingested_at     TIMESTAMPTZ NOT NULL,
            run_id          VARCHAR
        );

        CREATE TABLE dead_letters (
            topic       VARCHAR NOT NULL,
            partition   INTEGER NOT NULL,
            "offset"    BIGINT NOT NULL,
            raw         BLOB,
            error       VARCHAR NOT NULL,
            received_at TIMESTAMPTZ NOT NULL,
            run_id      VARCHAR,
            PRIMARY KEY (topic, partition, "offset")
        );

        CREATE TABLE alerts (
            alert_id        VARCHAR PRIMARY KEY,
            topic           VARCHAR NOT NULL,
            sentiment       VARCHAR NOT NULL,
            window_start    TIMESTAMPTZ NOT NULL,
            window_end      TIMESTAMPTZ NOT NULL,
            observed        INTEGER NOT NULL,
            expected        DOUBLE NOT NULL,
            score           DOUBLE NOT NULL,
            severity        VARCHAR NOT NULL,
            headlines       VARCHAR[],
            created_at      TIMESTAMPTZ NOT NULL,
            notified_at     TIMESTAMPTZ,
            notify_attempts INTEGER NOT NULL DEFAULT 0,
            last_error      VARCHAR,
            run_id          VARCHAR,
            UNIQUE (topic, sentiment, window_start, window_end)
        );

        CREATE TABLE consumer_offsets (
            consumer    VARCHAR NOT NULL,
            topic       VARCHAR NOT NULL,
            partition   INTEGER NOT NULL,
            next_offset BIGINT NOT NULL,
            updated_at  TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (consumer, topic, partition)
        );

        CREATE TABLE runs (
            run_id          VARCHAR PRIMARY KEY,
            started_at      TIMESTAMPTZ NOT NULL,
            finished_at     TIMESTAMPTZ NOT NULL,
            status          VARCHAR NOT NULL,
            messages_read   BIGINT NOT NULL,
            scored          BIGINT NOT NULL,
            duplicates      BIGINT NOT NULL,
            dead_lettered   BIGINT NOT NULL,
            alerts_raised   BIGINT NOT NULL,
            alerts_notified BIGINT NOT NULL,
            model_version   VARCHAR,
            error           VARCHAR
        );

        CREATE VIEW scored_news AS
        SELECT id, published_at, source, title, text,
               sentiment, sentiment_score, topic, topic_score, model_version,
               url, lang, tickers, ingested_at
        FROM news;
        """,
    ),
    Migration(
        2,
        "alert lifecycle and explanations, story ids, detector state, model registry",
        """
        CREATE TABLE alerts_v2 (
            alert_id        VARCHAR PRIMARY KEY,
            kind            VARCHAR NOT NULL DEFAULT 'count',
            topic           VARCHAR NOT NULL,
            sentiment       VARCHAR NOT NULL,
            ticker          VARCHAR,
            window_start    TIMESTAMPTZ NOT NULL,
            window_end      TIMESTAMPTZ NOT NULL,
            observed        INTEGER NOT NULL,
            expected        DOUBLE NOT NULL,
            score           DOUBLE NOT NULL,
            severity        VARCHAR NOT NULL,
            headlines       VARCHAR[],
            top_terms       VARCHAR[],
            top_tickers     VARCHAR[],
            explanation     JSON,
            status          VARCHAR NOT NULL DEFAULT 'open',
            acknowledged_at TIMESTAMPTZ,
            acknowledged_by VARCHAR,
            resolved_at     TIMESTAMPTZ,
            resolved_by     VARCHAR,
            notify          BOOLEAN NOT NULL DEFAULT true,
            created_at      TIMESTAMPTZ NOT NULL,
            notified_at     TIMESTAMPTZ,
            notify_attempts INTEGER NOT NULL DEFAULT 0,
            last_error      VARCHAR,
            run_id          VARCHAR
        );
        INSERT INTO alerts_v2 BY NAME
        SELECT alert_id, topic, sentiment, window_start, window_end, observed, expected, score,
               severity, headlines, created_at, notified_at, notify_attempts, last_error, run_id
        FROM alerts;
        DROP TABLE alerts;
        ALTER TABLE alerts_v2 RENAME TO alerts;

        ALTER TABLE news ADD COLUMN story_id VARCHAR;

        CREATE TABLE detector_state (
            key        VARCHAR PRIMARY KEY,
            state      JSON NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );

        CREATE TABLE model_registry (
            model_version VARCHAR PRIMARY KEY,
            base_model    VARCHAR,
            trained_at    TIMESTAMPTZ,
            metrics       JSON,
            registered_at TIMESTAMPTZ NOT NULL
        );

        CREATE OR REPLACE VIEW scored_news AS
        SELECT id, published_at, source, title, text,
               sentiment, sentiment_score, topic, topic_score, model_version,
               url, lang, tickers, story_id, ingested_at
        FROM news;
        """,
    ),
    Migration(
        3,
        "analyst views and macros (docs/sql.md)",
        ANALYST_VIEWS_V3,
    ),
)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       VARCHAR NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """
    )
    (version,) = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return version


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration newer than the database; return the versions applied."""
    applied = []
    version = current_version(con)
    known = MIGRATIONS[-1].version if MIGRATIONS else 0
    if version > known:
        raise duckdb.InvalidInputException(
            f"database schema is version {version}, newer than this yuqing ({known}); upgrade yuqing"
        )
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                [migration.version, migration.name],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        logger.info("applied migration %d: %s", migration.version, migration.name)
        applied.append(migration.version)
    return applied
