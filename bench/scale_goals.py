"""Issue 26's goals 1-4 in one run, each as a ratio against its anchor: the broker's cost per task and memory per
queued request against plain Celery (bench/broker_cost.py; a command task also against Celery's task that runs the
same command), the front end's CPU per put against `JobClient.put`
(bench/frontend.py --scale), and the scaler's pass at 1 000 workers against its budget (bench/scaler_fleet.py).

Each bench runs as its own process, one after the other (never two at once: they share the machine's cores), with
`--runs N` and its figures written as JSON; this prints one table of them: goal, figure, anchor, ratio, target,
met. The broker's cost is measured twice: with Redis sharing the cores with the workers, and with Redis on a core of
its own (broker_cost.py --pin). README's capacity model comes from such a run. Takes about 4 minutes on 2 cores
with --runs 3.
Run: python bench/scale_goals.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RUNS = 3
FLEET_WORKERS = 1000


@dataclass(frozen=True)
class Goal:
    """One row: a figure against its anchor, and the most the ratio may be."""

    goal: str
    figure: float
    anchor: float
    unit: str
    anchor_is: str
    target: float

    @property
    def ratio(self) -> float:
        return self.figure / self.anchor

    @property
    def met(self) -> bool:
        return self.ratio <= self.target


def run_bench(script: str, args: list[str], folder: Path) -> dict[str, Any]:
    """Run one bench to its end (its own output shown as it goes) and return the figures it wrote."""
    out = folder / f"{Path(script).stem}.json"
    subprocess.run([sys.executable, str(BENCH / script), *args, "--json", str(out)], check=True)
    return json.loads(out.read_text())


def goals(runs: int, folder: Path) -> tuple[list[Goal], str]:
    """The goals' rows, and what scaler_fleet.py found of the split of one decision across the hosts at
    FLEET_WORKERS workers ("right", or what is wrong)."""
    kinds = ["--only", "celery", "--only", "query", "--only", "command"]
    broker = run_bench("broker_cost.py", ["--runs", str(runs), *kinds, "--only", "celery_command", "--only", "memory"],
                       folder)  # fmt: skip
    pinned = run_bench("broker_cost.py", ["--runs", str(runs), *kinds, "--pin"], folder)
    frontend = run_bench("frontend.py", ["--scale", "--runs", str(runs), "--widths", "1"], folder)
    fleet = run_bench("scaler_fleet.py", ["--runs", str(runs), "--workers", str(FLEET_WORKERS)], folder)
    celery_cpu, memory = broker["kinds"]["celery"]["cpu_us"], broker["memory"]
    alone = pinned["kinds"]
    alone_celery = alone["celery"]["cpu_us"]
    command_cpu, celery_true = broker["kinds"]["command"]["cpu_us"], broker["kinds"]["celery_command"]["cpu_us"]
    put_anchor, fleet_pass = frontend["jobclient_us"], fleet["workers"][str(FLEET_WORKERS)]
    return [
        Goal("1. Redis CPU per no-op query", broker["kinds"]["query"]["cpu_us"], celery_cpu, "µs", "Celery", 2.0),
        Goal("1. Redis CPU per no-op command", command_cpu, celery_cpu, "µs", "Celery", 2.0),
        Goal("1. ... command, against Celery running `true`", command_cpu, celery_true, "µs", "Celery true", 2.0),
        Goal("1. ... query, Redis on its own core", alone["query"]["cpu_us"], alone_celery, "µs", "Celery", 2.0),
        Goal("1. ... command, Redis on its own core", alone["command"]["cpu_us"], alone_celery, "µs", "Celery", 2.0),
        Goal("2. memory per queued request", memory["ours"], memory["celery"], "B", "Celery", 1.2),
        Goal("3. front-end CPU per put", frontend["frontend_us"], put_anchor, "µs", "JobClient.put", 1.3),
        Goal("3. ... with 4 clients at once", frontend["loaded_us"], put_anchor, "µs", "JobClient.put", 1.3),
        Goal("4. pass's Redis, 1 000 workers", fleet_pass["redis_ms"], fleet_pass["goal_redis_ms"], "ms", "goal", 1.0),
        Goal("4. pass in all, 1 000 workers", fleet_pass["wall_ms"], fleet_pass["goal_wall_ms"], "ms", "goal", 1.0),
    ], str(fleet_pass["split"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--json", type=Path, help="write the table to this file")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale-goals-") as name:
        rows, split = goals(options.runs, Path(name))
    print(f"\nissue 26, goals 1-4 from one run (medians of {options.runs})")
    print(f"{'goal':<50} {'figure':>10} {'anchor':>22} {'ratio':>6} {'target':>7}  met")
    for row in rows:
        anchor = f"{row.anchor_is} {row.anchor:.1f} {row.unit}"
        figure = f"{row.figure:.1f} {row.unit}"
        met = "yes" if row.met else "no"
        print(f"{row.goal:<50} {figure:>10} {anchor:>22} {row.ratio:>6.2f} {row.target:>7.1f}  {met}")
    print(
        f"4. the split of one decision across the hosts (hold, up, past capacity, down), {FLEET_WORKERS} workers: "
        f"{split}"
    )
    if options.json:
        table = [{**asdict(row), "ratio": row.ratio, "met": row.met} for row in rows]
        options.json.write_text(json.dumps({"goals": table, "split": split}))


if __name__ == "__main__":
    main()
