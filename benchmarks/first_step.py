"""First-step latency of the JAX engine in a fresh process, cold (empty persistent cache) and warm
(the cache filled by the cold run): what every new eval env or worker process pays once.

    .venv/bin/python benchmarks/first_step.py --levels ../shared/levels/s/h4_thrust_aim.json --batch 64

Prints one CSV row per (size, batch, cache state) and writes benchmarks/results/first_step_cpu.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time, torch
start = time.perf_counter()
from kinetix_torch import engine, levels, schema
level = levels.load_level(sys.argv[1])
batch = int(sys.argv[2])
state = schema.to_tensordict({k: torch.as_tensor(v)[None].expand(batch, *v.shape).clone() for k, v in level.state.items()}, (batch,))
ready = time.perf_counter()
engine.step(state, torch.zeros(batch, level.static.action_dim), level.env_params, level.static)
done = time.perf_counter()
print(f"{ready - start:.3f} {done - ready:.3f}")
"""


def first_step(level: str, batch: int, cache: str) -> tuple[float, float]:
    env = {**os.environ, "KINETIX_JAX_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD, level, str(batch)], env=env, check=True, capture_output=True, text=True)
    import_s, step_s = map(float, out.stdout.split()[-2:])
    return import_s, step_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", nargs="+", required=True, help="level files (one size each)")
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "first_step_cpu.csv")
    args = parser.parse_args()
    rows = []
    for level in args.levels:
        for batch in args.batch:
            with tempfile.TemporaryDirectory() as cache:
                for state in ("cold", "warm"):
                    import_s, step_s = first_step(level, batch, cache)
                    rows.append({"level": Path(level).stem, "batch": batch, "cache": state,
                                 "import_and_setup_s": import_s, "first_step_s": step_s})
                    print(rows[-1], flush=True)
            off_import, off_step = first_step(level, batch, "off")
            rows.append({"level": Path(level).stem, "batch": batch, "cache": "off",
                         "import_and_setup_s": off_import, "first_step_s": off_step})
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
