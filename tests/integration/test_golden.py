"""sim and replay reports are byte-identical to the stored ones
(tests/golden/golden.py): a refactoring of the engine changes no decision.
A change meant to change decisions stores new reports with
`tests/golden/golden.py write build` and says why in its commit."""
import os
import subprocess
import sys

import pytest

from cpd import BUILD, ROOT


@pytest.mark.skipif(os.environ.get("CHOKEPOINT_SANITIZED") == "1",
                    reason="the unsanitized build checks the reports; "
                           "the sanitizer pass runs the small scenarios")
def test_sim_and_replay_reports_are_unchanged():
    r = subprocess.run([sys.executable,
                        os.path.join(ROOT, "tests", "golden", "golden.py"),
                        "check", BUILD], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
