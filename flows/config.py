"""yuqing's configuration: one pydantic-settings class, the only source of settings.

Values come, highest priority first, from keyword arguments, ``YUQING_*`` environment
variables, then a TOML file (``yuqing.toml`` in the working directory, or the file named by
``YUQING_CONFIG``). Secrets are ``SecretStr`` and never appear in logs, reprs or artifacts.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """'30s', '5m', '1.5h', '7d' -> timedelta; anything else raises ValueError."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h, 7d)")
    value, unit = float(match.group(1)), match.group(2)
    if value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return timedelta(seconds=value * _UNIT_SECONDS[unit])


def config_file() -> Path:
    return Path(os.environ.get("YUQING_CONFIG", "yuqing.toml"))


class AlertChannel(BaseModel):
    """One notification channel: an apprise URL and the least severe alert it receives."""

    model_config = ConfigDict(extra="forbid")
    url: SecretStr
    min_severity: Literal["medium", "high", "critical"] = "medium"


class MuteWindow(BaseModel):
    """Alerts of keys matching ``key`` are recorded but not notified inside this window:
    between ``start`` and ``end`` (either may be open), and/or ``daily`` "HH:MM-HH:MM" UTC."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="field=value pairs joined by ';', e.g. 'topic=Earnings'")
    start: datetime | None = None
    end: datetime | None = None
    daily: str | None = Field(None, pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$")


class AlertSettings(BaseModel):
    """The [alerts] table of yuqing.toml: detector levels and noise controls (docs/alerts.md)."""

    model_config = ConfigDict(extra="forbid")
    open_level: float = Field(
        3.65, gt=0, description="an alert opens at this score (z); the detector's default"
    )
    close_level: float = Field(2.0, description="and resolves below this one (hysteresis)")
    cooldown: str = Field("1h", description="no new alert for a key this long after its last")
    sentiments: list[str] = Field(["negative"], description="sentiments whose surges alert")
    share_alerts: bool = Field(True, description="alert on jumps of the negative share too")
    ticker_keys: bool = Field(True, description="also watch ticker x sentiment keys")
    digest_min: int = Field(4, ge=2, description="this many alerts at once go out as one digest")
    max_notify_age: str = Field("6h", description="alerts on older windows are backfill: no notify")
    notify: bool = Field(True, description="false: record alerts, never notify (replays)")
    channels: list[AlertChannel] = Field(default_factory=list)
    mute: list[MuteWindow] = Field(default_factory=list)
    headlines: int = Field(3, ge=1, le=20, description="representative headlines per alert")
    explain_steps: int = Field(16, ge=1, description="integrated-gradients steps per alert")
    story_lookback: str = Field("24h", description="how far back near-duplicates are matched")
    catch_up: str = Field("14d", description="most history a new or lagging key replays")

    @field_validator("cooldown", "max_notify_age", "story_lookback", "catch_up")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class Settings(BaseSettings):
    """Every setting yuqing reads. Environment variables are ``YUQING_`` + the upper-case name."""

    model_config = SettingsConfigDict(
        env_prefix="YUQING_", extra="forbid", validate_default=True, env_nested_delimiter="__"
    )

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    topic: str = Field("news", description="Kafka topic carrying news messages")
    consumer_name: str = Field(
        "yuqing", description="name under which read offsets are stored in DuckDB"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_timeout_s: float = Field(30.0, gt=0, description="give up on a silent broker after this")
    kafka_connect_attempts: int = Field(3, ge=1, description="attempts to reach the broker per run")

    # Storage and model
    db: Path = Field(Path("yuqing.duckdb"), description="DuckDB file")
    db_lock_timeout_s: float = Field(
        60.0, ge=0, description="how long a run waits while another process holds the DuckDB file"
    )
    replica_path: Path | None = Field(
        None, description="analysts' read replica; default: <db stem>.analyst.duckdb beside db"
    )
    model: Path = Field(Path("models/yuqing"), description="trained model directory")

    # Processing
    read_batch_size: int = Field(2000, ge=1, description="messages per read/score/store batch")
    inference_batch_size: int | None = Field(
        None, ge=1, description="texts per forward; default 1024 on GPU, 64 on CPU"
    )
    max_text_chars: int = Field(100_000, ge=1, description="longer texts are dead-lettered")
    device: str | None = Field(None, description="torch device; default: accelerate's choice")

    # Spike alerts
    alert_urls: SecretStr = Field(
        SecretStr(""), description="comma-separated apprise URLs (json://, slack://, mailto://)"
    )
    window: str = Field("5m", description="alert window length")
    alert_min_count: int = Field(5, ge=1, description="fewest stories an alert's window needs")

    alerts: AlertSettings = Field(
        default_factory=AlertSettings, description="detector levels and noise controls"
    )

    @field_validator("window")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _valid_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"not host:port: {server.strip()!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return init_settings, env_settings, toml

    @property
    def window_delta(self) -> timedelta:
        return parse_duration(self.window)

    @property
    def analyst_replica(self) -> Path:
        """The replica published after each commit for analysts (storage/replica.py)."""
        from storage.replica import replica_path_for

        return self.replica_path or replica_path_for(self.db)

    def alert_url_list(self) -> list[str]:
        return [u.strip() for u in self.alert_urls.get_secret_value().split(",") if u.strip()]

    def kafka_client_options(self) -> dict:
        """Keyword arguments shared by kafka-python's consumer, producer and admin client."""
        options: dict = {
            "bootstrap_servers": [s.strip() for s in self.kafka_bootstrap.split(",")],
            "security_protocol": self.kafka_security_protocol,
            "request_timeout_ms": int(self.kafka_timeout_s * 1000),
            "bootstrap_timeout_ms": int(min(self.kafka_timeout_s, 10.0) * 1000),
        }
        if self.kafka_security_protocol.startswith("SASL"):
            if not (
                self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
            ):
                raise ValueError(
                    "SASL needs YUQING_KAFKA_SASL_MECHANISM, YUQING_KAFKA_SASL_USERNAME "
                    "and YUQING_KAFKA_SASL_PASSWORD"
                )
            options |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_password.get_secret_value(),
            }
        if self.kafka_security_protocol.endswith("SSL"):
            for option, path in (
                ("ssl_cafile", self.kafka_ssl_cafile),
                ("ssl_certfile", self.kafka_ssl_certfile),
                ("ssl_keyfile", self.kafka_ssl_keyfile),
            ):
                if path is not None:
                    options[option] = str(path)
        return options

    def public_dict(self) -> dict:
        """Settings safe to log or publish: secrets masked."""
        values = self.model_dump()
        for name, value in values.items():
            if isinstance(value, SecretStr):
                values[name] = "**********" if value.get_secret_value() else ""
        values["alert_urls"] = f"{len(self.alert_url_list())} configured"
        return values
