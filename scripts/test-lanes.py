#!/usr/bin/env python3
"""Runs the workspace's test binaries in parallel lanes (scripts/test.sh calls it).

`cargo test` runs one test binary after another. Most of Drover's long binaries
(the end-to-end ones in `tests/`) spend their time waiting on containers, agents
and browsers, not on the CPU, so two of them side by side take little more than
one. This script reads the JSON messages of `cargo test --no-run
--message-format=json` (argument 1), then runs every test binary in
`--lanes N` workers, longest first (the `drover-tests` package's binaries, then
the rest by size), each in its package directory with `CARGO_MANIFEST_DIR` set
as `cargo test` would. A binary's output is printed whole when it ends, with its
wall time, so lanes do not interleave. Arguments after `--` go to every test
binary (test name filters, `--nocapture`, ...).

Exits 1 when any binary fails (every binary still runs), and prints the
`test result:` totals and the slowest binaries at the end.
"""

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time

# Packages whose test binaries go first: the long, mostly waiting end-to-end ones.
FIRST = ("drover-tests",)


def binaries(messages_path):
    found = []
    with open(messages_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if msg.get("reason") != "compiler-artifact" or not msg.get("profile", {}).get("test"):
                continue
            exe = msg.get("executable")
            if not exe:
                continue
            target = msg["target"]
            package = msg["package_id"]
            # "path+file:///work/main/tests#drover-tests@0.1.0" or the older "name version (url)".
            name = package.split("#", 1)[1].split("@", 1)[0] if "#" in package else package.split(" ", 1)[0]
            manifest = msg.get("manifest_path") or ""
            found.append(
                {
                    "package": name,
                    "name": target["name"],
                    "kind": ",".join(target.get("kind", [])),
                    "exe": exe,
                    "dir": os.path.dirname(manifest) or os.getcwd(),
                }
            )
    # One entry per executable (a package's lib and bin test targets are distinct).
    seen, unique = set(), []
    for b in found:
        if b["exe"] not in seen:
            seen.add(b["exe"])
            unique.append(b)
    return unique


def order(bins):
    def key(b):
        first = 0 if b["package"] in FIRST else 1
        try:
            size = os.path.getsize(b["exe"])
        except OSError:
            size = 0
        return (first, -size)

    return sorted(bins, key=key)


def run_one(b, extra, log_dir):
    env = dict(os.environ)
    env["CARGO_MANIFEST_DIR"] = b["dir"]
    env["CARGO_PKG_NAME"] = b["package"]
    label = f"{b['package']} {b['kind']} {b['name']}"
    out_path = os.path.join(log_dir, f"{b['package']}-{b['kind']}-{b['name']}.log".replace(",", "_"))
    start = time.monotonic()
    with open(out_path, "w+", encoding="utf-8", errors="replace") as out:
        code = subprocess.call([b["exe"], *extra], cwd=b["dir"], env=env, stdout=out, stderr=subprocess.STDOUT)
        out.seek(0)
        text = out.read()
    return label, code, time.monotonic() - start, text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("messages", help="output of cargo test --no-run --message-format=json")
    ap.add_argument("--lanes", type=int, default=int(os.environ.get("DROVER_TEST_LANES", "2")))
    ap.add_argument("--log-dir", default=None, help="where each binary's output is kept")
    ap.add_argument("extra", nargs="*", help="arguments for every test binary (after --)")
    args = ap.parse_args()

    bins = order(binaries(args.messages))
    if not bins:
        print("test-lanes: no test binaries in the cargo messages", file=sys.stderr)
        return 1
    log_dir = args.log_dir or os.path.join(os.getcwd(), "target", "test-logs")
    os.makedirs(log_dir, exist_ok=True)
    print(f"test-lanes: {len(bins)} test binaries in {args.lanes} lanes; outputs kept in {log_dir}", flush=True)

    work = queue.Queue()
    for b in bins:
        work.put(b)
    lock = threading.Lock()
    results = []

    def lane():
        while True:
            try:
                b = work.get_nowait()
            except queue.Empty:
                return
            label, code, secs, text = run_one(b, args.extra, log_dir)
            with lock:
                results.append((label, code, secs, text))
                verdict = "ok" if code == 0 else f"FAILED (exit {code})"
                print(f"\n==> {label}: {verdict} in {secs:.1f} s ({b['exe']})", flush=True)
                sys.stdout.write(text)
                sys.stdout.flush()

    threads = [threading.Thread(target=lane) for _ in range(max(1, args.lanes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    passed = failed = 0
    for _, _, _, text in results:
        for line in text.splitlines():
            if line.startswith("test result:"):
                words = line.replace(";", " ").split()
                for i, w in enumerate(words):
                    if w == "passed" and i > 0 and words[i - 1].isdigit():
                        passed += int(words[i - 1])
                    if w == "failed" and i > 0 and words[i - 1].isdigit():
                        failed += int(words[i - 1])
    bad = [label for label, code, _, _ in results if code != 0]
    print("\nslowest test binaries:")
    for label, _, secs, _ in sorted(results, key=lambda r: -r[2])[:12]:
        print(f"  {secs:7.1f} s  {label}")
    print(f"\ntotal: {passed} passed, {failed} failed")
    if bad:
        print("failed binaries:\n  " + "\n  ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
