#!/usr/bin/python3
"""Runs the interop scenarios (scenarios/) against the srtp-relay binary given as argument:
one PASS/FAIL line each, then "N passed, N failed". Run through `proto-tests/interop/run`,
which installs the peers first. `--only NAME` runs one scenario; `--keep` keeps the work
directory (logs, WAVs, SIP traces) for a look afterwards.
"""
import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Fail, Procs  # noqa: E402
import scenarios  # noqa: E402


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("relay")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.relay = os.path.abspath(args.relay)
    chosen = [s for s in scenarios.ALL if not args.only or s.name in args.only]
    if not chosen:
        sys.exit(f"no scenario named {args.only}; have {[s.name for s in scenarios.ALL]}")
    root = tempfile.mkdtemp(prefix="srtp-relay-interop-")
    signal.signal(signal.SIGALRM, on_alarm)
    # SIGTERM/SIGINT on the runner still stop every peer: the finally blocks run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    passed = failed = 0
    t_all = time.monotonic()
    for k, sc in enumerate(chosen):
        workdir = os.path.join(root, sc.name)
        os.makedirs(workdir)
        procs = Procs(workdir)
        # Ports base..base+199 per scenario, below Linux's ephemeral range (32768-60999) and
        # the ranges the Rust tests (19000-35200) and the relay's default (30000-39999) use.
        ctx = scenarios.Ctx(args.relay, workdir, procs, base=12000 + 200 * scenarios.ALL.index(sc))
        t0 = time.monotonic()
        signal.alarm(sc.timeout)
        try:
            note = sc.run(ctx)
            signal.alarm(0)
            passed += 1
            print(f"PASS {sc.name} ({time.monotonic() - t0:.1f} s){': ' + note if note else ''}", flush=True)
        except (Fail, Timeout, Exception) as e:
            signal.alarm(0)
            failed += 1
            if isinstance(e, Timeout):
                why = f"expected the scenario to finish within {sc.timeout} s; it was still running"
            elif isinstance(e, Fail):
                why = str(e)
            else:
                why = "".join(traceback.format_exception(e)).rstrip()
            print(f"FAIL {sc.name} ({time.monotonic() - t0:.1f} s): {why}", flush=True)
            for line in ctx.diagnostics():
                print("    " + line, flush=True)
        finally:
            signal.alarm(0)
            procs.stop_all()
    print(f"{passed} passed, {failed} failed ({time.monotonic() - t_all:.0f} s)", flush=True)
    if args.keep or failed:
        print(f"logs: {root}", flush=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
