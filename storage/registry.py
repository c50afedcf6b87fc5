"""The model registry: one row per model version that has scored news (view ``model_versions``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

import duckdb

from storage.db import translate_errors


def register_model(
    con: duckdb.DuckDBPyConnection,
    *,
    model_version: str,
    base_model: str | None,
    trained_at: datetime | str | None,
    metrics: Mapping[str, object] | None,
) -> bool:
    """Record a model version the first time it is used; True when this call added the row.

    ``trained_at`` may be an ISO 8601 string (as training writes it); ``metrics`` is stored as
    JSON. A version already registered keeps its first row.
    """
    if isinstance(trained_at, str):
        trained_at = datetime.fromisoformat(trained_at)
    with translate_errors("registering the model"):
        # One row with parameters, no registered frame: DuckDB 2.0 refuses `register()` while an
        # earlier statement's result is unfinished, and `ON CONFLICT ... RETURNING` leaves one.
        # One process writes, so checking first and inserting second is race-free.
        known = con.execute(
            "SELECT count(*) FROM model_registry WHERE model_version = ?", [model_version]
        ).fetchall()[0][0]
        if known:
            return False
        con.execute(
            """
            INSERT INTO model_registry
                (model_version, base_model, trained_at, metrics, registered_at)
            VALUES (?, ?, ?, CAST(? AS JSON), ?)
            """,
            [
                model_version,
                base_model,
                trained_at,
                None if metrics is None else json.dumps(metrics, default=str),
                datetime.now(UTC),
            ],
        ).fetchall()
    return True
