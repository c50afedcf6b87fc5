"""prefect.yaml deploys the monitoring flow with its schedule on a real (test) Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("prefect_harness")
def test_prefect_deploy_registers_the_scheduled_monitor():
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    prefect = [sys.executable, "-m", "prefect"]
    created = subprocess.run(
        [*prefect, "work-pool", "create", "yuqing", "--type", "process", "--overwrite"],
        capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--name", "yuqing-monitor"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("yuqing-monitor/yuqing-monitor")
    assert deployment.entrypoint == "flows/monitor.py:monitor"
    assert deployment.work_pool_name == "yuqing"
    assert [s.schedule.interval.total_seconds() for s in deployment.schedules] == [300]
    assert deployment.global_concurrency_limit.limit == 1
