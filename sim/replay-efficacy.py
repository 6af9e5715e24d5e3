#!/usr/bin/env python3
"""Measure a scenario through `chokepoint replay`, on the mail.log the
simulator writes, against its ground truth (doc/efficacy.md).

    python3 sim/replay-efficacy.py [--json] [--keep DIR] SCENARIO.yaml...
                                   [--build DIR] [--config FILE]

A SCENARIO that is a directory holds a week already written, as
sim/mailserver-log.py writes it (week.log, map, truth.tsv; a cold start):
it is replayed as it is.

For each scenario: `chokepoint sim --maillog` writes the week as a Postfix
smarthost without chokepoint logs it (every message accepted), with the
history of a warm start in a log of its own and the truth (which queue
ids are spam, which logins are zombies, since when); `chokepoint learn`
learns the history (warm start only); `chokepoint replay --state` replays
the week in shadow mode. A message counts as stopped when replay has a
would-be refusal for it (a limit's or the account's state's DEFER_IF_PERMIT,
REJECT or HOLD); in shadow mode nothing is retried, so the figures are what
the shadow log of that week would say.

Figures, as in the in-process report (doc/sim.md): spam share after;
zombies caught (its account throttled or blocked, or any of its spam
stopped); spam accepted per zombie (median, p90); legit logins whose
worst state was THROTTLED or worse / BLOCKED; legit login-days with a
would-be deferral (a zombie login's days from its infection on are not
counted, as in the simulator).

Accounts: a login's account is found by its login, one relaying by
address (an unauth_relay zombie, a customer without SASL) by the address
its account key names (`ip:ADDR/PREFIX`, whatever the prefix).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY = 86400000
RANK = {"NORMAL": 0, "WATCH": 1, "THROTTLED": 2, "BLOCKED": 3}
STOPS = ("DEFER_IF_PERMIT", "REJECT", "HOLD")


def run(*cmd):
    return subprocess.run(list(cmd), check=True, capture_output=True,
                          text=True).stdout


def parse_time(s):
    # "2026-11-02T07:01:06.416Z" -> ms since the epoch
    from datetime import datetime, timezone
    d = datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(d.replace(tzinfo=timezone.utc).timestamp() * 1000)


def read_truth(path):
    spam, zombies, logins, days = {}, [], {}, 0
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            p = line.rstrip("\n").split("\t")
            if p[0] == "spam":
                spam[p[1]] = int(p[2])
            elif p[0] == "zombie":
                zombies.append({"index": int(p[1]), "kind": p[2],
                                "account": p[3], "start": int(p[4]),
                                "end": int(p[5])})
            elif p[0] == "login":
                logins[p[1]] = p[2]
            elif p[0] == "legit_login_days":
                days = int(p[1])
    return spam, zombies, logins, days


def quantile(v, q):
    if not v:
        return None
    v = sorted(v)
    return v[int(q * (len(v) - 1) + 0.5)]


def measure_written(scenario, build, config):
    """A week written by another generator (sim/mailserver-log.py)."""
    cp = os.path.join(build, "chokepoint")
    rep = json.loads(run(cp, "replay", os.path.join(scenario, "week.log"),
                         "--config", config, "--map",
                         os.path.join(scenario, "map"), "--json", "--list",
                         "100000000"))
    name = os.path.basename(os.path.normpath(scenario))
    return figures(name, rep, *read_truth(os.path.join(scenario,
                                                       "truth.tsv")), False)


def measure(scenario, build, config, keep):
    if os.path.isdir(scenario):
        return measure_written(scenario, build, config)
    work = keep or tempfile.mkdtemp(prefix="chokepoint-replay-eff-")
    os.makedirs(work, exist_ok=True)
    cp = os.path.join(build, "chokepoint")
    week, hist = os.path.join(work, "week.log"), os.path.join(work, "hist.log")
    truth, mp = os.path.join(work, "truth.tsv"), os.path.join(work, "map")
    state = os.path.join(work, "state.db")
    try:
        for f in (week, hist, state):
            if os.path.exists(f):
                os.unlink(f)
        run(cp, "sim", scenario, "--maillog", week, "--history-log", hist,
            "--truth", truth)
        run(cp, "sim", scenario, "--map-out", mp)
        warm = os.path.getsize(hist) > 0
        if warm:
            run(cp, "learn", hist, "--config", config, "--map", mp,
                "--state", state)
        args = [cp, "replay", week, "--config", config, "--map", mp,
                "--json", "--list", "100000000"]
        if warm:
            args += ["--state", state]
        rep = json.loads(run(*args))
        return figures(scenario, rep, *read_truth(truth), warm)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def figures(scenario, rep, spam, zombies, logins, legit_days, warm):
    stopped = {d["queue_id"]: d for d in rep["decisions"]
               if d["verdict"] in STOPS}
    # accounts by login, or by address for those who relay by address
    # (whatever prefix their account has)
    by_who = {}
    for a in rep["accounts"]:
        by_who.setdefault(a.get("login") or
                          a["key"].split(":", 1)[-1].split("/")[0], a)
    total, spam_total = rep["messages"], len(spam)
    spam_stopped = sum(1 for q in spam if q in stopped)
    after = total - len(stopped)
    # zombies: caught, spam accepted
    per_zombie = {z["index"]: [] for z in zombies}
    for q, z in spam.items():
        per_zombie.setdefault(z, []).append(q)
    kind = {z["index"]: z["kind"] for z in zombies}
    camp_ok = sum(1 for q, z in spam.items()
                  if kind.get(z) == "campaign" and q not in stopped)
    caught, accepted = 0, []
    since = {}
    for z in zombies:
        a = by_who.get(z["account"], {})
        qs = per_zombie.get(z["index"], [])
        ok = sum(1 for q in qs if q not in stopped)
        accepted.append(ok)
        caught += (RANK.get(a.get("worst_state"), 0) >= 2 or
                   any(q in stopped for q in qs))
        acct = z["account"]
        since[acct] = min(since.get(acct, z["start"]), z["start"])
    # legit logins (and customers who relay by address: their address)
    legit = [l for l, t in logins.items() if t == "legit"]
    seen = [l for l in legit if l in by_who]
    thr = [l for l in seen if RANK.get(by_who[l]["worst_state"], 0) >= 2]
    blk = [l for l in seen if RANK.get(by_who[l]["worst_state"], 0) >= 3]
    # legit login-days with a would-be deferral
    days = set()
    for q, d in stopped.items():
        if q in spam:
            continue
        who = d.get("login") or d.get("client")
        t = parse_time(d["time"])
        if who in since and t >= since[who]:
            continue  # a zombie login, from its infection on
        days.add((who, t // DAY))
    return {
        "scenario": os.path.basename(scenario), "warm_start": warm,
        "messages": total, "spam_messages": spam_total,
        "spam_share_before": spam_total / total if total else 0,
        "spam_share_after":
            (spam_total - spam_stopped) / after if after else 0,
        "spam_share_after_without_campaigns":
            (spam_total - spam_stopped - camp_ok) / (after - camp_ok)
            if after > camp_ok else 0,
        "zombie_accounts": len(zombies), "zombie_accounts_caught": caught,
        "spam_accepted_per_zombie_median": quantile(accepted, 0.5),
        "spam_accepted_per_zombie_p90": quantile(accepted, 0.9),
        "legit_logins": len(seen), "legit_logins_throttled": len(thr),
        "legit_logins_blocked": len(blk),
        "legit_login_days": legit_days,
        "legit_login_days_deferred": len(days),
        "legit_logins_throttled_list": sorted(thr)[:20],
    }


def main(argv):
    build, config, keep, as_json, scen = (os.path.join(ROOT, "build"),
                                          os.path.join(ROOT, "etc",
                                                       "chokepoint.yaml"),
                                          None, False, [])
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--build":
            build, i = argv[i + 1], i + 1
        elif a == "--config":
            config, i = argv[i + 1], i + 1
        elif a == "--keep":
            keep, i = argv[i + 1], i + 1
        elif a == "--json":
            as_json = True
        else:
            scen.append(a)
        i += 1
    if not scen:
        print(__doc__, file=sys.stderr)
        return 2
    rows = [measure(s, build, config, keep) for s in scen]
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| scenario (replay) | start | spam before | spam after "
          "| after, without campaigns | zombies caught | spam accepted / zombie (median / p90) "
          "| legit logins throttled | legit logins blocked "
          "| legit login-days deferred |")
    print("| --- " * 10 + "|")
    for r in rows:
        z = r["zombie_accounts"]
        print("| `%s` | %s | %.2f %% | %.3f %% | %.3f %% | %s | %s "
              "| %d / %d | %d "
              "| %d / %d (%.3f %%) |" % (
                  r["scenario"].replace(".yaml", ""),
                  "warm" if r["warm_start"] else "cold",
                  100 * r["spam_share_before"], 100 * r["spam_share_after"],
                  100 * r["spam_share_after_without_campaigns"],
                  "%d / %d" % (r["zombie_accounts_caught"], z) if z else "–",
                  "%s / %s" % (r["spam_accepted_per_zombie_median"],
                               r["spam_accepted_per_zombie_p90"]) if z
                  else "–",
                  r["legit_logins_throttled"], r["legit_logins"],
                  r["legit_logins_blocked"], r["legit_login_days_deferred"],
                  r["legit_login_days"],
                  100 * r["legit_login_days_deferred"] /
                  max(1, r["legit_login_days"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
