"""The model registry: one row per model version that has scored news (view ``model_versions``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

import duckdb
import pandas as pd

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
    row = pd.DataFrame(
        {
            "model_version": [model_version],
            "base_model": pd.Series([base_model], dtype="string"),
            "trained_at": pd.Series([trained_at], dtype="datetime64[us, UTC]"),
            "metrics": pd.Series(
                [None if metrics is None else json.dumps(metrics, default=str)], dtype="string"
            ),
            "registered_at": [datetime.now(UTC)],
        }
    )
    with translate_errors("registering the model"):
        # A plain existence check, then INSERT: DuckDB 2.0.1 leaves an unfinished result behind
        # `INSERT ... ON CONFLICT DO NOTHING RETURNING` when the row exists. One process writes.
        known = con.execute(
            "SELECT count(*) FROM model_registry WHERE model_version = ?", [model_version]
        ).fetchone()[0]
        if known:
            return False
        con.register("model_row", row)
        try:
            con.execute(
                """
                INSERT INTO model_registry BY NAME
                SELECT model_version, base_model, trained_at, CAST(metrics AS JSON) AS metrics,
                       registered_at
                FROM model_row
                """
            )
        finally:
            con.unregister("model_row")
    return True
