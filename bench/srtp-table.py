#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench --bench srtp` run as a Markdown table beside
webrtc-srtp's (same run) and, given the output of `bench/libsrtp/run` as a file, libsrtp's; the
ratios are theirs / ours (above 1 means we are faster).

    bench/srtp-table.py [target/criterion] [libsrtp-output.txt]

Reads target/criterion/*/*/new/estimates.json."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
libsrtp = {}
if len(sys.argv) > 2:
    for line in pathlib.Path(sys.argv[2]).read_text().splitlines():
        suite, size, op, ns = line.split()
        libsrtp[(suite, f"{size}B", op)] = float(ns)

NAMES = {"80": "AES_CM_128_HMAC_SHA1_80", "32": "AES_CM_128_HMAC_SHA1_32",
         "256_80": "AES_256_CM_HMAC_SHA1_80", "256_32": "AES_256_CM_HMAC_SHA1_32",
         "gcm128": "AEAD_AES_128_GCM", "gcm256": "AEAD_AES_256_GCM"}


def median_ns(group, op, impl):
    path = root / group / op.replace("+", "_") / impl / "new" / "estimates.json"
    if not path.exists():
        path = root / group / op / impl / "new" / "estimates.json"
    return json.loads(path.read_text())["median"]["point_estimate"]


head = "| suite | packet | operation | ours (ns) | webrtc-srtp (ns) | ratio |"
rule = "|---|---|---|---:|---:|---:|"
if libsrtp:
    head += " libsrtp 2.5 (ns) | ratio |"
    rule += "---:|---:|"
print(head)
print(rule)
for suite, name in NAMES.items():
    for size in ("172B", "1200B"):
        group = f"srtp_{suite}_{size}"
        for op in ("protect", "unprotect", "protect+unprotect"):
            ours, theirs = median_ns(group, op, "ours"), median_ns(group, op, "webrtc-srtp")
            row = f"| {name} | {size} | {op} | {ours:.0f} | {theirs:.0f} | {theirs / ours:.2f}x |"
            if libsrtp:
                lib = libsrtp[(suite, size, op)]
                row += f" {lib:.0f} | {lib / ours:.2f}x |"
            print(row)
