#!/usr/bin/python3
"""golden.py — stored reports of `chokepoint sim` and `chokepoint replay`.

Refactoring the engine must not change a single decision. This script runs
a fixed set of small scenarios through `chokepoint sim` (in process) and,
via `chokepoint sim --maillog` + `learn` + `replay`, through the mail-log
path, and compares every report byte for byte with the one stored in
tests/golden/reports/ (the full decision list of a replay as a
digest). Wall-clock figures (the only fields that differ
from run to run) are replaced by "WALL" before comparing.

    tests/golden/golden.py check BUILD     compare (the test suite runs this)
    tests/golden/golden.py write BUILD     store new reports, after a change
                                           that is meant to change decisions
                                           (say why in the commit message)
"""
import hashlib
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REPORTS = os.path.join(HERE, "reports")
SCEN = os.path.join(ROOT, "sim", "scenarios")
CONFIG = os.path.join(ROOT, "etc", "chokepoint.yaml")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "maillog")

# in-process sim reports (JSON and text)
SIM = ["small-live", "blaster", "chain-letter", "campaign", "low-and-slow",
       "stolen-credentials", "unauth-relay", "shared-office"]
SIM_TEXT = ["small-live", "campaign"]
# through the mail log: sim --maillog, learn (warm start), replay
# (tests/golden/scenarios: shared-office and stale-newsletter made small)
REPLAY = ["small-live", "office-small", "newsletter-small"]
GSCEN = os.path.join(HERE, "scenarios")
# replay of the hand-written fixtures
LIST = "400"  # decisions and accounts listed verbatim
FIXTURE_LOGS = ["classic", "instances", "lifecycle", "submission"]

WALL = [
    (re.compile(r'"(wall_seconds|elapsed_s|lines_per_s)":[0-9.e+-]+'),
     r'"\1":"WALL"'),
    (re.compile(r"policy requests in [0-9.]+ s"), "policy requests in WALL s"),
    (re.compile(r"\([0-9]+ lines/s, [0-9.]+ s\)"), "(WALL lines/s, WALL s)"),
]


def normalize(text):
    text = text.replace(ROOT, "ROOT")
    for rx, rep in WALL:
        text = rx.sub(rep, text)
    return text


def run(*args):
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("%s: exit %d\n%s" % (" ".join(args), r.returncode,
                                               r.stderr[-2000:]))
    return r.stdout


def reports(build):
    """Yield (name, text) for every stored report."""
    cp = os.path.join(build, "chokepoint")
    for s in SIM:
        yield ("sim-%s.json" % s,
               run(cp, "sim", os.path.join(SCEN, s + ".yaml"), "--config",
                   CONFIG, "--json"))
    for s in SIM_TEXT:
        yield ("sim-%s.txt" % s,
               run(cp, "sim", os.path.join(SCEN, s + ".yaml"), "--config",
                   CONFIG))
    for s in REPLAY:
        with tempfile.TemporaryDirectory(prefix="cp-golden-") as w:
            scen = os.path.join(SCEN, s + ".yaml")
            if not os.path.exists(scen):
                scen = os.path.join(GSCEN, s + ".yaml")
            week, hist = os.path.join(w, "week.log"), os.path.join(w, "hist")
            truth, mp = os.path.join(w, "truth"), os.path.join(w, "map")
            state = os.path.join(w, "state.db")
            run(cp, "sim", scen, "--maillog", week, "--history-log", hist,
                "--truth", truth)
            run(cp, "sim", scen, "--map-out", mp)
            args = [cp, "replay", week, "--config", CONFIG, "--map", mp]
            if os.path.getsize(hist) > 0:
                run(cp, "learn", hist, "--config", CONFIG, "--map", mp,
                    "--state", state)
                args += ["--state", state]
            # every decision, as a digest (the full list is tens of MB);
            # the first LIST of them, and every account, verbatim
            full = normalize(run(*args, "--json", "--list", "100000000")
                             .replace(w, "TMP")).encode()
            yield ("replay-%s.json.sha256" % s, "%s  %d bytes\n" % (
                hashlib.sha256(full).hexdigest(), len(full)))
            yield ("replay-%s.json" % s,
                   run(*args, "--json", "--list", LIST).replace(w, "TMP"))
            yield ("replay-%s.txt" % s,
                   run(*args, "--list", LIST).replace(w, "TMP"))
    for f in FIXTURE_LOGS:
        yield ("replay-fixture-%s.json" % f,
               run(cp, "replay", os.path.join(FIXTURES, f + ".log"),
                   "--config", CONFIG, "--no-map", "--year", "2026",
                   "--json"))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("check", "write"):
        sys.exit(__doc__)
    mode, build = sys.argv[1], os.path.abspath(sys.argv[2])
    os.makedirs(REPORTS, exist_ok=True)
    bad = 0
    for name, text in reports(build):
        text = normalize(text)
        path = os.path.join(REPORTS, name)
        if mode == "write":
            with open(path, "w") as f:
                f.write(text)
            print("wrote", path)
            continue
        with open(path) as f:
            want = f.read()
        if text == want:
            print("same   ", name)
            continue
        bad += 1
        print("CHANGED", name)
        for i, (a, b) in enumerate(zip(want.splitlines(), text.splitlines())):
            if a != b:
                at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y),
                          min(len(a), len(b)))
                lo = max(0, at - 100)
                print("  line %d, column %d:\n  - ...%s\n  + ...%s" % (
                    i + 1, at + 1, a[lo:at + 100], b[lo:at + 100]))
                break
        else:
            print("  lengths differ: %d stored, %d now" % (len(want),
                                                         len(text)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
