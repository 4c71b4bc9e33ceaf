"""Fault soak: the fault loop of tests/test_faults.py for a set time, on real brokers on loopback.

    .venv/bin/python bench/fault_soak.py --minutes 3 --seed 1 [--kind mosquitto|amqtt|both]
    .venv/bin/python bench/fault_soak.py --kills-per-component 100 --one-stop-per-round --kind amqtt

Under load from several API clients, edges, the sequencer and the broker are SIGKILLed (then
restarted) or SIGSTOPped (then SIGCONTed) at seeded random moments until the time is up; then every
replica must reach the sequencer's version and hash, every accepted order must be in the journal
exactly once, and every fill a client was told about must be a journal fill (see check_invariants).
Prints each fault, how many it survived, the SIGKILLs per component (sequencer, edges, broker; on
amqtt one kill of fastbook-broker counts for both the broker and the sequencer), the SIGSTOPs and the
invariant figures: orders accepted, lost (accepted but not in the journal: must be 0), applied twice
(in the journal twice, or a fill reported twice: must be 0) and the final version/hash every replica
agreed on. Exit status 1 if an invariant broke.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from tests.faults.test_faults import KILL_COMPONENTS, run_fault_loop  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=2.0, help="fault time per broker kind (default 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kind", choices=("mosquitto", "amqtt", "both"), default="both")
    parser.add_argument("--clients", type=int, default=3, help="API clients sending orders (default 3)")
    parser.add_argument("--edges", type=int, default=2, help="fastbook-edge replica processes (default 2)")
    parser.add_argument(
        "--kills-per-component",
        type=int,
        metavar="N",
        help="instead of --minutes: until the sequencer, edges and broker were each SIGKILLed N times",
    )
    parser.add_argument(
        "--one-stop-per-round",
        action="store_true",
        help="each round of faults: every kill kind and one (seeded) SIGSTOP kind, not every SIGSTOP kind",
    )
    args = parser.parse_args()
    if args.kills_per_component is not None and args.kills_per_component < 1:
        parser.error("--kills-per-component must be at least 1")
    kinds = ["mosquitto", "amqtt"] if args.kind == "both" else [args.kind]
    failed = False
    summary = []
    for offset, kind in enumerate(kinds):
        seed = args.seed + offset
        rule = (
            f"{args.kills_per_component} SIGKILLs per component"
            if args.kills_per_component is not None
            else f"{args.minutes} min of faults"
        )
        print(f"== {kind}: {rule}, seed {seed}", flush=True)
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
                    kills_per_component=args.kills_per_component,
                    one_stop_per_round=args.one_stop_per_round,
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
        kills = ", ".join(f"{c} {run.kills[c]}" for c in KILL_COMPONENTS)
        inv = run.invariants
        summary.append(
            f"{kind:9} seed {seed}: survived {len(run.faults)} faults in {run.seconds / 60:.1f} min ({mix})\n"
            f"          SIGKILLs per component: {kills}; SIGSTOPs {run.stops}\n"
            f"          orders accepted {inv.accepted_new}, lost 0, applied twice 0 (journal checked), "
            f"fill reports missing {inv.fill_reports_missing}, "
            f"redelivered {inv.duplicate_report_deliveries}\n"
            f"          replicas agree: final version {run.version}, hash {run.state_hash}\n"
            f"          {inv.line()}; invariants OK"
        )
    print("\n== summary")
    for line in summary:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
