import pytest
from pydantic import ValidationError

from flows.config import Settings, parse_duration


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key in list(__import__("os").environ):
        if key.startswith("YUQING_"):
            monkeypatch.delenv(key)
    return tmp_path


def test_toml_file_is_read_and_environment_wins(clean_env, monkeypatch):
    (clean_env / "yuqing.toml").write_text('topic = "wire"\nwindow = "15m"\nalert_min_count = 9\n')
    monkeypatch.setenv("YUQING_WINDOW", "10m")
    settings = Settings()
    assert (settings.topic, settings.window, settings.alert_min_count) == ("wire", "10m", 9)
    assert settings.window_delta.total_seconds() == 600


def test_yuqing_config_names_another_file(clean_env, monkeypatch):
    other = clean_env / "prod.toml"
    other.write_text('db = "/srv/y.duckdb"\n')
    monkeypatch.setenv("YUQING_CONFIG", str(other))
    assert str(Settings().db) == "/srv/y.duckdb"


def test_unknown_keys_and_bad_values_are_refused(clean_env):
    (clean_env / "yuqing.toml").write_text('topik = "typo"\n')
    with pytest.raises(ValidationError, match="topik"):
        Settings()
    (clean_env / "yuqing.toml").unlink()
    with pytest.raises(ValidationError, match="host:port"):
        Settings(kafka_bootstrap="localhost")


def test_secrets_never_show_in_repr_or_public_dict(clean_env):
    token = "xoxb-SECRET-TOKEN-123"
    settings = Settings(
        alert_urls=f"slack://{token}/#risk,json://127.0.0.1:9/x",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="hunter2-pw",
    )
    assert settings.alert_url_list()[0] == f"slack://{token}/#risk"
    for text in (repr(settings), str(settings), str(settings.public_dict())):
        assert token not in text and "hunter2-pw" not in text
    assert settings.public_dict()["alert_urls"] == "2 configured"


def test_kafka_security_options_are_plumbed(clean_env, tmp_path):
    ca = tmp_path / "ca.pem"
    options = Settings(
        kafka_bootstrap="k1:9093,k2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_cafile=ca,
    ).kafka_client_options()
    assert options["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert (
        options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    )
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "pw")
    assert options["ssl_cafile"] == str(ca)
    with pytest.raises(ValueError, match="SASL needs"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT").kafka_client_options()


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1.5h", 5400), ("7d", 604800)]
)
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "5 parsecs", "-1m", "0m"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_alert_levels_default_to_the_detectors():
    import inspect

    from flows.cli_alerts import detect_command
    from flows.config import AlertSettings
    from flows.detector import DetectorConfig

    detector = DetectorConfig()
    alerts = AlertSettings()
    assert (alerts.open_level, alerts.close_level) == (detector.open_level, detector.close_level)
    options = inspect.signature(detect_command).parameters
    assert options["open_level"].default == detector.open_level
    assert options["close_level"].default == detector.close_level
