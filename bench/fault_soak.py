"""Fault soak: the fault loop of tests/test_faults.py for a set time, on real brokers on loopback.

    /work/venv/bin/python bench/fault_soak.py --minutes 3 --seed 1 [--kind mosquitto|amqtt|both]

Under load from several API clients, edges, the sequencer and the broker are SIGKILLed (then
restarted) or SIGSTOPped (then SIGCONTed) at seeded random moments until the time is up; then every
replica must reach the sequencer's version and hash, every accepted order must be in the journal
exactly once, and every fill a client was told about must be a journal fill (see check_invariants).
Prints each fault, how many it survived and the invariant figures. Exit status 1 if an invariant broke.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from tests.faults.test_faults import run_fault_loop  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=2.0, help="fault time per broker kind (default 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kind", choices=("mosquitto", "amqtt", "both"), default="both")
    parser.add_argument("--clients", type=int, default=3, help="API clients sending orders (default 3)")
    parser.add_argument("--edges", type=int, default=2, help="fastbook-edge replica processes (default 2)")
    args = parser.parse_args()
    kinds = ["mosquitto", "amqtt"] if args.kind == "both" else [args.kind]
    failed = False
    summary = []
    for offset, kind in enumerate(kinds):
        seed = args.seed + offset
        print(f"== {kind}: {args.minutes} min of faults, seed {seed}", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"fault-soak-{kind}-") as workdir:
            began = time.monotonic()
            try:
                run = run_fault_loop(
                    kind,
                    Path(workdir),
                    seed,
                    faults=0,
                    minutes=args.minutes,
                    clients=args.clients,
                    edges=args.edges,
                    say=lambda line: print(f"  {line}", flush=True),
                )
            except AssertionError as exc:
                failed = True
                print(f"  INVARIANT BROKEN after {time.monotonic() - began:.0f}s: {exc}", flush=True)
                summary.append(f"{kind:9} FAILED: {str(exc)[:200]}")
                continue
        assert run.invariants is not None
        kinds_seen: dict[str, int] = {}
        for fault in run.faults:
            key = " ".join(fault.split(",")[0].split()[:2])
            kinds_seen[key] = kinds_seen.get(key, 0) + 1
        mix = ", ".join(f"{k} x{n}" for k, n in sorted(kinds_seen.items()))
        summary.append(
            f"{kind:9} survived {len(run.faults)} faults in {run.seconds:.0f}s ({mix}); final version "
            f"{run.version}; {run.invariants.line()}; invariants OK"
        )
    print("\n== summary")
    for line in summary:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
