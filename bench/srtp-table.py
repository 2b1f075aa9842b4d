#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench --bench srtp` run as a Markdown table, with the
ratio webrtc-srtp / ours (above 1 means we are faster). Reads target/criterion/*/*/new/estimates.json."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def median_ns(group, op, impl):
    path = root / group / op.replace("+", "_") / impl / "new" / "estimates.json"
    if not path.exists():
        path = root / group / op / impl / "new" / "estimates.json"
    return json.loads(path.read_text())["median"]["point_estimate"]


print("| suite | packet | operation | ours (ns) | webrtc-srtp (ns) | ratio |")
print("|---|---|---|---:|---:|---:|")
for suite in ("80", "32"):
    for size in ("172B", "1200B"):
        group = f"srtp_{suite}_{size}"
        for op in ("protect", "unprotect", "protect+unprotect"):
            ours, theirs = median_ns(group, op, "ours"), median_ns(group, op, "webrtc-srtp")
            print(f"| _{suite} | {size} | {op} | {ours:.0f} | {theirs:.0f} | {theirs / ours:.2f}x |")
