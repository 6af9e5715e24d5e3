"""sim and replay reports are byte-identical to the stored ones
(tests/golden/golden.py): a refactoring of the engine changes no decision.
A change meant to change decisions stores new reports with
`tests/golden/golden.py write build` and says why in its commit.

A `week` test (conftest.py): it runs shared-office.yaml's week among its
scenarios, and the reports are the optimised build's; the sanitizer pass
deselects it. Its twins there: test_sim.py runs the same scenarios (and
the small ones of tests/golden/scenarios), test_replay.py and
test_logins.py the sim --maillog, learn and replay path."""
import os
import subprocess
import sys

import pytest

from cpd import BUILD, HANG, ROOT


@pytest.mark.week
def test_sim_and_replay_reports_are_unchanged():
    r = subprocess.run([sys.executable,
                        os.path.join(ROOT, "tests", "golden", "golden.py"),
                        "check", BUILD], capture_output=True, text=True,
                       timeout=HANG)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
