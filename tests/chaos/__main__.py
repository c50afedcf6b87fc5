"""Run the chaos suite and print each scenario's figures.

    python -m tests.chaos --all
    python -m tests.chaos --scenario crash --messages 20000 --kills 20 --seed 3

Exits non-zero when any guarantee fails. Starts its own tansu broker and Prefect API, and
builds (once, under --workdir) the tiny model the tests use, so inference is cheap.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = (
    "crash",
    "bad-input",
    "broker-outage",
    "notifier-outage",
    "analysts",
    "disk-full",
    "db-unwritable",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--all", action="store_true", help="run every scenario")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, default=[])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--messages", type=int, default=100_000, help="crash: messages streamed")
    parser.add_argument("--kills", type=int, default=50, help="crash: SIGKILLs")
    parser.add_argument("--batch", type=int, default=500, help="crash: read batch size")
    parser.add_argument("--fuzzed", type=int, default=10_000, help="bad-input: fuzzed messages")
    parser.add_argument("--good", type=int, default=2_000, help="bad-input: good messages")
    parser.add_argument("--huge", type=int, default=3, help="bad-input: 5 MB texts")
    parser.add_argument("--queries", type=int, default=1_000, help="analysts: queries in all")
    parser.add_argument("--cli-queries", type=int, default=500, help="analysts: via yuqing sql")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not args.all and not args.scenario:
        parser.error("name a --scenario or pass --all")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    log = logging.getLogger("chaos").info
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from infra.broker import EmbeddedBroker
    from tests.chaos import scenarios
    from tests.chaos.common import ChaosEnv, tiny_model

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="yuqing-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    names = SCENARIOS if args.all else tuple(dict.fromkeys(args.scenario))
    log(f"chaos suite in {workdir}: {', '.join(names)}")
    model = tiny_model(workdir / "tiny-model")
    outcomes = []
    with (
        EmbeddedBroker(log_path=workdir / "broker.log") as broker,
        prefect_test_harness(server_startup_timeout=120),
    ):
        env = ChaosEnv(
            bootstrap=broker.bootstrap,
            model_dir=model,
            workdir=workdir,
            prefect_api_url=PREFECT_API_URL.value(),
            broker=broker,
        )
        runners = {
            "crash": lambda: scenarios.crash(
                env,
                messages=args.messages,
                kills=args.kills,
                batch=args.batch,
                seed=args.seed,
                log=log,
            ),
            "bad-input": lambda: scenarios.bad_input(
                env, fuzzed=args.fuzzed, good=args.good, huge=args.huge, seed=args.seed
            ),
            "broker-outage": lambda: scenarios.broker_outage(env),
            "notifier-outage": lambda: scenarios.notifier_outage(env),
            "analysts": lambda: scenarios.analysts(
                env, queries=args.queries, cli_queries=args.cli_queries
            ),
            "disk-full": lambda: scenarios.disk_full(env),
            "db-unwritable": lambda: scenarios.db_unwritable(env),
        }
        for name in names:
            started = time.monotonic()
            log(f"scenario {name} ...")
            try:
                outcome = runners[name]()
            except Exception as e:  # noqa: BLE001 - a crashed scenario is a failed guarantee
                from tests.chaos.common import Outcome

                outcome = Outcome(name, failures=[f"scenario crashed: {type(e).__name__}: {e}"])
            outcome.figures.setdefault("scenario time", f"{time.monotonic() - started:.0f}s")
            outcomes.append(outcome)
            sys.stdout.write(outcome.table() + "\n\n")
            sys.stdout.flush()
    if args.markdown:
        args.markdown.write_text(markdown(outcomes), encoding="utf-8")
    failed = [o.scenario for o in outcomes if not o.passed]
    sys.stdout.write(f"{len(outcomes) - len(failed)} of {len(outcomes)} scenarios passed\n")
    return 1 if failed else 0


def markdown(outcomes) -> str:
    lines = []
    for o in outcomes:
        lines += [
            f"### {o.scenario}: {'PASS' if o.passed else 'FAIL'}",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in o.figures.items()]
        lines += [f"| failed | {f} |" for f in o.failures]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
