"""`yuqing dashboard`: the data it embeds, and the page in headless Chromium.

The database is written through the real write path (tests/storage/analyst_fixtures.py).
The browser tests load the file with the network blocked (the page must be self-contained),
check that Plotly drew both charts with the alerts marked, and that each filter changes
what is shown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.flows.browser import chromium, require_chromium, wait_until_ready


@pytest.fixture(scope="module")
def dashboard_html(analyst_db, tmp_path_factory):
    out = tmp_path_factory.mktemp("dashboard") / "dashboard.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "dashboard",
            "--db",
            str(analyst_db),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert f"dashboard written to {out}" in result.stdout
    return out


def embedded_data(html_path) -> dict:
    html = html_path.read_text(encoding="utf-8")
    start = html.index('<script type="application/json" id="yuqing-data">') + len(
        '<script type="application/json" id="yuqing-data">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_the_file_embeds_the_period_s_data_from_the_database(dashboard_html, analyst_db):
    from storage.queries import read_only_query

    data = embedded_data(dashboard_html)
    (items,) = read_only_query(
        analyst_db,
        "SELECT count(*) FROM news WHERE published_at >= time_bucket(INTERVAL 1 HOUR, now() - INTERVAL 7 DAY)",
    ).iloc[0]
    assert sum(r[3] + r[4] + r[5] for r in data["cube"] if r[2] == "") == items
    tickers = {r[2] for r in data["cube"] if r[2]}
    assert {"XOM", "AAPL"} <= tickers
    by_topic = {a["topic"]: a for a in data["alerts"]}
    energy = by_topic["Energy | Oil"]
    assert energy["severity"] == "critical" and energy["explanation"]["baseline"] == 1.4
    assert energy["top_terms"][:2] == ["crude", "opec"]
    assert all(h["topic"] for h in data["headlines"])
    # the markup in one headline cannot close the data's <script> element
    assert "</script><script>window.pwned" not in dashboard_html.read_text(encoding="utf-8")


def test_a_bad_time_range_is_one_line(analyst_db, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "dashboard", "--db", str(analyst_db),
         "--output", str(tmp_path / "d.html"), "--since", "last tuesday-ish"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a date, time or duration" in lines[0], result.stderr
    assert not (tmp_path / "d.html").exists()


def _state(driver) -> dict:
    return driver.execute_script(
        """
        const net = document.getElementById('net-chart');
        const vol = document.getElementById('volume-chart');
        return {
          netSvg: net.querySelectorAll('svg.main-svg').length,
          volSvg: vol.querySelectorAll('svg.main-svg').length,
          lines: net.data.filter(t => t.name !== 'alerts').map(t => t.name),
          alertMarkers: (net.data.find(t => t.name === 'alerts') || {x: []}).x.length,
          drawnPaths: net.querySelectorAll('.scatterlayer .trace path.js-line').length,
          bars: vol.querySelectorAll('.barlayer .point').length,
          alertCards: [...document.querySelectorAll('.alert-card')].map(c => c.querySelector('b').textContent),
          headlineTopics: [...document.querySelectorAll('#headline-rows tr.headline-row td:nth-child(2)')].map(td => td.textContent),
          headlineTexts: [...document.querySelectorAll('#headline-rows tr.headline-row td:nth-child(3)')].map(td => td.textContent),
          items: document.querySelector('#kpis .kpi b').textContent,
          pwned: window.pwned === 1,
          boldInHeadlines: document.querySelectorAll('#headline-rows b').length,
        };
        """
    )


def _choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, select_id)).select_by_value(value)


def test_the_page_draws_charts_and_filters_change_them(dashboard_html):
    require_chromium()
    with chromium() as driver:
        driver.get(dashboard_html.resolve().as_uri())
        wait_until_ready(driver)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        everything = _state(driver)
        assert everything["netSvg"] > 0 and everything["volSvg"] > 0
        assert len(everything["lines"]) == 5 and everything["drawnPaths"] >= 5
        assert everything["alertMarkers"] == 3
        assert everything["bars"] > 50
        assert len(everything["alertCards"]) == 3
        assert len(everything["headlineTopics"]) == 15
        # the headline with markup is the most confident one: shown as text, never run
        assert everything["headlineTexts"][0].startswith("Crude <b>crash</b> </script><script>")
        assert not everything["pwned"] and everything["boldInHeadlines"] == 0

        _choose(driver, "topic-filter", "Energy | Oil")
        energy = _state(driver)
        assert energy["lines"] == ["Energy | Oil"]
        assert energy["alertCards"] == ["Energy | Oil"] and energy["alertMarkers"] == 1
        assert set(energy["headlineTopics"]) == {"Energy | Oil"}
        assert int(energy["items"].replace(",", "")) < int(everything["items"].replace(",", ""))
        alert_text = driver.find_element("id", "alert-list").text
        assert "OPEC+ talks collapse" in alert_text and "crude" in alert_text
        assert "24 negative Energy | Oil items in 20 minutes" in alert_text  # its explanation

        _choose(driver, "topic-filter", "")
        _choose(driver, "ticker-filter", "AAPL")
        aapl = _state(driver)
        assert aapl["alertCards"] == ["Earnings / AAPL"]
        assert set(aapl["lines"]) <= {"Earnings", "Stock Movement"}
        assert all("AAPL" in text for text in aapl["headlineTexts"])

        _choose(driver, "ticker-filter", "")
        driver.execute_script(
            """
            const start = new Date(Date.UTC(...arguments[0]));
            const end = new Date(start.getTime() + 3600 * 1000);
            document.getElementById('from-filter').value = start.toISOString().slice(0, 16);
            document.getElementById('to-filter').value = end.toISOString().slice(0, 16);
            document.getElementById('to-filter').dispatchEvent(new Event('change'));
            """,
            _yesterday_noon_parts(),
        )
        hour = _state(driver)
        assert hour["alertCards"] == ["Energy | Oil"]
        assert int(hour["items"].replace(",", "")) < 60

        driver.find_element("id", "reset-filters").click()
        assert _state(driver)["items"] == everything["items"]


def _yesterday_noon_parts() -> list[int]:
    from datetime import UTC, datetime

    from tests.storage.analyst_fixtures import yesterday_noon

    noon = yesterday_noon(datetime.now(UTC))
    return [noon.year, noon.month - 1, noon.day, noon.hour]
