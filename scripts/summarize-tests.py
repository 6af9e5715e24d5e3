#!/usr/bin/python3
"""Count passed/failed tests across the suites run by run-tests.sh.

Meson suites: one JSON object per test in <suite>.json. Pytest suites:
JUnit XML (a suite run in parts: <suite>.rc and <suite>.<part>.rc, each
with its XML, summed on one line). Other suites (fuzz replay): the exit
code counts as one test.
A suite whose results file is missing but that exited non-zero counts as
one failure, so a suite that could not run is never silently green.
Prints per-suite lines, then "N passed, N failed"; exits 1 on any failure.
"""
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

def count(out, name, rc):
    """(passed, failed, skipped) of one run: NAME.rc with NAME.json,
    NAME.xml or neither."""
    p = f = s = 0
    js, xml = os.path.join(out, name + ".json"), os.path.join(out, name + ".xml")
    if os.path.exists(js):
        for line in open(js):
            if not line.strip():
                continue
            r = json.loads(line).get("result")
            if r in ("OK", "EXPECTEDFAIL"):
                p += 1
            elif r == "SKIP":
                s += 1
            else:
                f += 1
    elif os.path.exists(xml):
        root = ET.parse(xml).getroot()
        for tc in root.iter("testcase"):
            if tc.find("failure") is not None or tc.find("error") is not None:
                f += 1
            elif tc.find("skipped") is not None:
                s += 1
            else:
                p += 1
    else:
        p, f = (1, 0) if rc == 0 else (0, 1)
    if rc != 0 and f == 0:
        f = 1  # the suite failed outside any single test
    return p, f, s


out = sys.argv[1]
# a suite run in parts (SUITE.rc, SUITE.PART.rc: run-tests.sh runs the
# latency tests apart) is one line
suites = {}
for rcfile in sorted(glob.glob(os.path.join(out, "*.rc"))):
    name = os.path.basename(rcfile)[:-3]
    rc = int(open(rcfile).read().strip() or 1)
    suites.setdefault(name.split(".")[0], []).append((name, rc))
passed = failed = skipped = 0
for suite, runs in sorted(suites.items()):
    p = f = s = 0
    for name, rc in runs:
        rp, rf, rs = count(out, name, rc)
        p, f, s = p + rp, f + rf, s + rs
    print("%-12s %4d passed, %d failed, %d skipped" % (suite, p, f, s))
    passed, failed, skipped = passed + p, failed + f, skipped + s
print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed else 0)
