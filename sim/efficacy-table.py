#!/usr/bin/env python3
"""Run every shipped scenario and print the doc/efficacy.md table.

    python3 sim/efficacy-table.py [BUILD_DIR] [CONFIG]

BUILD_DIR defaults to build/, CONFIG to etc/chokepoint.yaml. SCENARIOS
(space-separated names) runs a subset; SIM_ARGS adds `chokepoint sim`
options (e.g. SIM_ARGS=--no-content)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
CONFIG = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "etc",
                                                            "chokepoint.yaml")
SCENARIOS = os.environ.get("SCENARIOS", "").split() or [
    "isp-week", "isp-week-cold", "blaster", "low-and-slow", "campaign",
    "stolen-credentials", "unauth-relay", "quiet-template",
    "business-staff", "shared-office", "stale-newsletter",
    "stale-newsletter-cold", "mail-servers", "newsletter-spike", "slow-merge",
    "chain-letter", "holiday-burst", "cgnat-roaming"]
EXTRA = os.environ.get("SIM_ARGS", "").split()


def pct(x):
    return "%.3f %%" % (100 * x)


print("| scenario | start | spam before | spam after "
      "| after, without campaigns | zombies caught "
      "| spam accepted / zombie (median / p90) | detection, median min "
      "| legit logins throttled / blocked | legit login-days deferred "
      "| legit messages deferred |")
print("| --- " * 11 + "|")
for name in SCENARIOS:
    r = json.loads(subprocess.run(
        [os.path.join(BUILD, "chokepoint"), "sim",
         os.path.join(ROOT, "sim", "scenarios", name + ".yaml"),
         "--config", CONFIG, "--json"] + EXTRA,
        capture_output=True, text=True, check=True).stdout)
    z = r["zombie_accounts"]
    print("| `%s` | %s | %.2f %% | %s | %s | %s | %s | %s | %s | %d / %d (%s) "
          "| %d |"
          % (name, "warm %gd" % r["history_days"] if r["history_days"]
             else "cold",
             100 * r["spam_share_before"], pct(r["spam_share_after"]),
             pct(r["spam_share_after_without_campaigns"]),
             "%d / %d" % (r["zombie_accounts_caught"], z) if z else "–",
             "%d / %d" % (r["spam_accepted_per_zombie_median"],
                          r["spam_accepted_per_zombie_p90"]) if z else "–",
             "%.1f" % r["detect_minutes_median"]
             if z and r["detect_minutes_median"] is not None else "–",
             "%d / %d of %d" % (r["legit_logins_throttled"],
                                r["legit_logins_blocked"], r["legit_logins"]),
             r["legit_login_days_deferred"], r["legit_login_days"],
             pct(r["legit_login_days_deferred"] /
                 max(1, r["legit_login_days"])),
             r["legit_messages_deferred"]))
