"""Compromise detection over the raw policy protocol (fast, no Postfix):
the ranking in `chokepoint top`, the evidence in the decision log, and
detection in shadow mode. The real-Postfix detection tests are in
test_postfix.py."""
import os
import re
import subprocess
import time

import pytest

from cpd import CHOKEPOINT, HANG, Daemon, PolicyClient, rcpt_request, wait_for

CLASSES = """
classes:
  residential:
    limits:
      - { metric: messages, window: 1d, max: 100000 }
  unauthenticated:
    limits:
      - { metric: messages, window: 1d, max: 100000 }
"""


def message(c, user, sender, rcpts, inst):
    """One message as Postfix asks: RCPTs, then END-OF-MESSAGE."""
    replies = []
    for r in rcpts:
        replies.append(c.ask(rcpt_request(user=user, sender=sender,
                                          recipient=r, instance=inst)))
        if "action=DUNNO" not in replies[-1]:
            return replies
    replies.append(c.ask(rcpt_request(user=user, sender=sender, instance=inst,
                                      state="END-OF-MESSAGE", recipient="",
                                      recipient_count=str(len(rcpts)))))
    return replies


def zombie_traffic(c, user, n, victims="v"):
    """n spam messages: forged senders, six fresh recipients each (a new
    `victims` prefix for another run's list)."""
    out = []
    for i in range(n):
        out += message(c, user, "x%d@forged%d.example" % (i, i),
                       ["%s%d.%d@free%d.example" % (victims, i, r, r)
                        for r in range(6)],
                       "z%s%s%d" % (user, victims, i))
    return out


def test_top_ranks_the_zombie_and_log_carries_evidence(tmp_path):
    d = Daemon(tmp_path, classes=CLASSES,
               extra={"daemon": "log_level: info"}).start()
    try:
        c = PolicyClient(d.policy_sock)
        for i in range(5):
            message(c, "ann@isp.example", "ann@isp.example",
                    ["mum@home.example"], "a%d" % i)
        replies = zombie_traffic(c, "zed@isp.example", 16)
        assert any("5.7.1" in r and "blocked" in r for r in replies), replies
        top = d.ctl("top", "5")["accounts"]
        assert top[0]["key"] == "u:zed@isp.example"
        assert top[0]["state"] == "BLOCKED"
        assert top[-1]["key"] == "u:ann@isp.example"
        assert top[-1]["score"] < 0
        text = subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "top"],
                              capture_output=True, text=True, timeout=HANG)
        assert text.returncode == 0
        assert text.stdout.splitlines()[1].split()[0] == "BLOCKED"
        changes = [x for x in d.decisions_list() if x.get("previous_state")]
        assert [x["state"] for x in changes][-1] == "BLOCKED"
        assert "forged_sender" in changes[-1]["signals"] or \
            "new_recipient" in changes[-1]["signals"]
        assert "NORMAL -> " in d.read_log() or "-> BLOCKED" in d.read_log()
        # show: every signal with its weight, count, share and last time,
        # and the baselines it was compared against
        acct = d.ctl("show", "zed@isp.example")
        sig = {x["signal"]: x for x in acct["signals"]}
        assert sig["forged_sender"]["weight"] == 1.0
        assert sig["forged_sender"]["times"] >= 5
        assert sig["forged_sender"]["share"] > 1
        assert re.match(r"\d{4}-\d\d-\d\dT", sig["forged_sender"]["last"])
        assert acct["baseline"]["messages_this_hour"] >= 5
        # its recent decisions, newest first: the refusals of its state
        recent = acct["recent"]
        assert 1 <= len(recent) <= 10, recent
        assert recent[0]["action"] == "REJECT" and recent[0]["rule"] == \
            "state" and "5.7.1" in recent[0]["text"], recent[0]
        assert recent[0]["time"] >= recent[-1]["time"]
        # a long reply is cut at a word, and says so
        t = recent[0]["text"]
        assert len(t) <= 95 and t.endswith("...") and t[-4] != " " and \
            t[:-3] + " " in [x["text"] for x in d.decisions_list()
                             if x.get("text")][-1], t
        assert any(x["state"] in ("THROTTLED", "BLOCKED") for x in recent)
        ann = d.ctl("show", "ann@isp.example")
        assert ann["baseline"]["senders_owned"] == 1, ann
        assert ann["recent"] == [], ann["recent"]
        text = subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "show",
                               "zed@isp.example"], capture_output=True,
                              text=True, timeout=HANG).stdout
        assert "signals (weight" in text and "baseline:" in text, text
        assert "recent decisions (newest first)" in text and \
            "REJECT" in text, text
    finally:
        assert d.stop() == 0


def test_detection_shadow_answers_dunno_but_records(tmp_path):
    d = Daemon(tmp_path, classes=CLASSES +
               "detection:\n  shadow: true\n"
               "notify:\n  from: abuse@isp.example\n"
               "  smtp: smtp://127.0.0.1:9\n  abuse_to: a@isp.example\n"
               "containment:\n  hold_command: /bin/false\n",
               extra={"daemon": "log_level: info"})
    d.start()
    try:
        c = PolicyClient(d.policy_sock)
        replies = zombie_traffic(c, "zed@isp.example", 16)
        assert all(r.strip() == "action=DUNNO" for r in replies), replies
        acct = d.ctl("show", "zed@isp.example")
        assert acct["state"] == "BLOCKED"
        would = [x for x in d.decisions_list() if x["shadow"]]
        assert would and would[-1]["verdict"] == "REJECT"
        # shadow mode does nothing about the block: no report, no hold
        assert "shadow mode: no notification, no hold" in d.read_log()
        ob = d.ctl("status")["outbox"]
        assert ob["queued"] == 0 and ob["sent"] == 0 and ob["failed"] == 0
    finally:
        assert d.stop() == 0


def ctl(d, *args):
    return subprocess.run([CHOKEPOINT, "-s", d.admin_sock] + list(args),
                          capture_output=True, text=True, timeout=HANG)


def test_self_service_release_is_limited_per_period(tmp_path):
    """The customer may release an automatic block once per period
    (containment.self_release_max); the next block needs the abuse desk.
    A block by the abuse desk (MANUAL_HOLD) is never self-released."""
    d = Daemon(tmp_path, classes=CLASSES + "containment:\n"
               "  self_release_max: 1\n  self_release_period: 30d\n").start()
    try:
        c = PolicyClient(d.policy_sock)
        zombie_traffic(c, "zed@isp.example", 16)
        assert d.ctl("show", "zed@isp.example")["state"] == "BLOCKED"
        r = ctl(d, "release", "zed@isp.example", "--self-service")
        assert r.returncode == 0 and "PROBATION" in r.stdout, r
        hist = d.ctl("history", "zed@isp.example")["history"]
        assert hist[0]["actor"].startswith("self-service (uid ")
        assert hist[0]["reason"] == "the customer confirmed the clean-up"
        zombie_traffic(c, "zed@isp.example", 16, victims="w")
        assert d.ctl("show", "zed@isp.example")["state"] == "BLOCKED"
        r = ctl(d, "release", "zed@isp.example", "--self-service")
        assert r.returncode == 1 and "abuse desk" in r.stdout + r.stderr, r
        assert d.ctl("show", "zed@isp.example")["state"] == "BLOCKED"
        # the abuse desk can
        r = ctl(d, "release", "zed@isp.example", "--reason", "ticket 12")
        assert r.returncode == 0, r
        # released already: the refusal says so, not that it was never
        # blocked automatically
        r = ctl(d, "release", "zed@isp.example", "--self-service")
        assert r.returncode == 1 and "the account is PROBATION, not " \
            "blocked: there is nothing to release" in r.stdout, r
        # a manual hold is the abuse desk's to lift
        assert ctl(d, "block", "amy@isp.example", "--reason",
                   "ticket 13", "--create").returncode == 0
        r = ctl(d, "release", "amy@isp.example", "--self-service")
        assert r.returncode == 1 and "the abuse desk put this account on " \
            "hold" in r.stdout, r
    finally:
        assert d.stop() == 0


def test_allow_keeps_limits_but_no_state_actions(tmp_path):
    """`chokepoint allow` vouches for an account: zombie-like traffic (a
    mailing tool with odd senders) is not throttled or blocked, the evidence
    is still shown, the allowance survives a restart, and release
    withdraws it (back to NORMAL)."""
    d = Daemon(tmp_path, classes=CLASSES).start()
    try:
        assert ctl(d, "allow", "tool@isp.example").returncode == 2
        # vouched for before its first message: --create (the account
        # is not known yet, and a mistyped one would be refused)
        r = ctl(d, "allow", "tool@isp.example", "--reason", "ticket 7: "
                "mailing tool sends for many domains")
        assert r.returncode == 1 and "unknown account" in r.stdout, r
        r = ctl(d, "allow", "tool@isp.example", "--reason", "ticket 7: "
                "mailing tool sends for many domains", "--create")
        assert r.returncode == 0 and "ALLOWED" in r.stdout, r
        c = PolicyClient(d.policy_sock)
        replies = zombie_traffic(c, "tool@isp.example", 16)
        assert all(x.strip() == "action=DUNNO" for x in replies), replies
        acct = d.ctl("show", "tool@isp.example")
        assert acct["state"] == "ALLOWED", acct
        assert float(re.match(r"score (-?[\d.]+)", acct["evidence"]).group(1)) \
            > 15, acct
        d.kill9()
        d.start()
        assert d.ctl("show", "tool@isp.example")["state"] == "ALLOWED"
        r = ctl(d, "release", "tool@isp.example", "--reason", "done")
        assert r.returncode == 0 and "NORMAL" in r.stdout, r
        c = PolicyClient(d.policy_sock)
        replies = zombie_traffic(c, "tool@isp.example", 16)
        assert any("5.7.1" in x or "4.7.1" in x for x in replies)
    finally:
        d.stop()


def test_refusals_of_a_blocked_account_are_rate_limited_in_the_log(tmp_path):
    """A blocked zombie that keeps trying does not flood the log: its
    refusals are logged at a bounded rate and the rest counted."""
    d = Daemon(tmp_path, classes=CLASSES,
               extra={"daemon": "log_level: info"}).start()
    try:
        c = PolicyClient(d.policy_sock)
        zombie_traffic(c, "zed@isp.example", 16)
        for i in range(300):
            r = c.ask(rcpt_request(user="zed@isp.example",
                                   sender="s@forged.example",
                                   recipient="r%d@x.example" % i,
                                   instance="late%d" % i))
            assert "5.7.1" in r
        refusals = [l for l in d.read_log().splitlines()
                    if "REJECT" in l and "zed@isp.example" in l]
        assert 20 <= len(refusals) <= 120, len(refusals)
        st = d.ctl("status")
        assert st["refusals_unlogged"] >= 180, st
        assert st["decisions"]["REJECT"] >= 300
    finally:
        assert d.stop() == 0


def test_per_class_detection_settings(tmp_path):
    """A class may hold instead of reject (block_action), watch in shadow
    mode, or have no detection at all; other classes keep the defaults."""
    classes = CLASSES + """
  business:
    detection: { block_action: hold }
    limits:
      - { metric: messages, window: 1d, max: 100000 }
  trial:
    detection: { shadow: true }
    limits:
      - { metric: messages, window: 1d, max: 100000 }
  lists:
    detection: false
    limits:
      - { metric: messages, window: 1d, max: 100000 }
"""
    d = Daemon(tmp_path, classes=classes, customer_map=(
        "biz@isp.example c-biz business\n"
        "new@isp.example c-new trial\n"
        "list@isp.example c-list lists\n")).start()
    try:
        c = PolicyClient(d.policy_sock)
        home = zombie_traffic(c, "home@isp.example", 16)
        assert any("action=REJECT 5.7.1" in r for r in home)
        biz = zombie_traffic(c, "biz@isp.example", 16)
        assert any(r.startswith("action=HOLD") for r in biz), biz
        assert not any("REJECT" in r for r in biz)
        trial = zombie_traffic(c, "new@isp.example", 16)
        assert all(r.strip() == "action=DUNNO" for r in trial)
        assert d.ctl("show", "new@isp.example")["state"] == "BLOCKED"
        lists = zombie_traffic(c, "list@isp.example", 16)
        assert all(r.strip() == "action=DUNNO" for r in lists)
        assert d.ctl("show", "list@isp.example")["state"] == "NORMAL"
    finally:
        assert d.stop() == 0


def test_notification_survives_a_crash(tmp_path):
    """The ticket system is down when zed is blocked: the webhook is
    retried, chokepointd is killed with -9, and after the restart the
    notification of the same incident is delivered once; a later restart
    sends nothing again."""
    import json
    from test_containment import Webhook, wait_for
    hook = Webhook(fail_first=10 ** 6)
    d = Daemon(tmp_path, classes=CLASSES + (
        "notify:\n  from: abuse@isp.example\n  customer: false\n"
        "  webhook: %s\n  retry: 200ms\n  attempts: 50\n" % hook.url))
    try:
        d.start()
        c = PolicyClient(d.policy_sock)
        zombie_traffic(c, "zed@isp.example", 16)
        assert d.ctl("show", "zed@isp.example")["state"] == "BLOCKED"
        assert wait_for(lambda: len(hook.posts) >= 2), hook.posts
        assert d.ctl("status")["outbox"]["queued"] == 1
        incident = json.loads(hook.posts[0][2])["incident"]
        d.kill9()
        hook.fail_first = 0
        failed = len(hook.posts)
        d.start()
        assert "resuming 1 notification" in d.read_log(), d.read_log()
        assert wait_for(lambda: len(hook.posts) > failed), d.read_log()
        ev = json.loads(hook.posts[-1][2])
        assert ev["incident"] == incident and ev["state"] == "BLOCKED"
        assert wait_for(lambda: d.ctl("status")["outbox"]["sent"] == 1)
        assert d.stop() == 0
        # a row no version could run (edited by hand) is dropped, not run
        import sqlite3
        db = sqlite3.connect(d.db)
        db.execute("INSERT INTO outbox(kind,what,account,incident,target,"
                   "sender,rcpt,body,timeout,retry,attempts,max_attempts,due)"
                   " VALUES(99,'x','u:x',0,'/bin/false',NULL,NULL,x'',1,1,0,"
                   "1,0)")
        db.commit()
        db.close()
        d.start()
        assert "is not a job this version can run; deleted" in d.read_log()
        time.sleep(1.0)
        assert len(hook.posts) == failed + 1, hook.posts[failed:]
        assert d.ctl("status")["outbox"]["queued"] == 0
    finally:
        d.stop()
        hook.close()


def test_tls_stack_and_uniform_size_reach_the_evidence(tmp_path):
    """Over the policy protocol (the daemon's clock taken from the
    requests, --sim-clock): the TLS attributes Postfix sends
    (encryption_protocol, encryption_cipher) are learned per account and a
    plaintext session from the same login is tls_new; one template (the
    END-OF-MESSAGE size within 2 %) sent to a new address every five
    minutes is uniform_size from its third hour, once an hour, and from
    then on the owner's sender earns its credit once an hour, not with
    every message; soon after, the account is throttled. All of it shows
    in `chokepoint show`."""
    d = Daemon(tmp_path, classes=CLASSES).start(args=["--sim-clock"])
    t0 = 1798000000000  # ms
    try:
        c = PolicyClient(d.policy_sock)
        tls = {"encryption_protocol": "TLSv1.3",
               "encryption_cipher": "TLS_AES_256_GCM_SHA384"}

        def msg(i, size, enc, t_ms, rcpt="mum@home.example"):
            """One message; False if it was deferred (at RCPT there is
            then no END-OF-MESSAGE, as with Postfix)."""
            a = rcpt_request(user="ann@isp.example", sender="ann@isp.example",
                             recipient=rcpt, instance="t%d" % i,
                             chokepoint_sim_time=str(t_ms), **enc)
            r = c.ask(a)
            if "action=DEFER_IF_PERMIT" in r:
                return False
            assert "action=DUNNO" in r
            a.update(protocol_state="END-OF-MESSAGE", recipient="",
                     recipient_count="1", size=str(size))
            r = c.ask(a)  # the size's evidence may decide this one too
            assert "action=DUNNO" in r or "action=DEFER_IF_PERMIT" in r, r
            return "action=DUNNO" in r

        def signals():
            return {x["signal"]: x for x in
                    d.ctl("show", "ann@isp.example")["signals"]}

        for i, size in enumerate([3000, 41000, 7200, 12000]):
            msg(i, size, tls, t0 + i * 60000)
        sig = signals()
        assert "tls_new" not in sig and "uniform_size" not in sig, sig
        for i in range(3):
            msg(10 + i, 9000 + i * 4000, {"encryption_protocol": "",
                                          "encryption_cipher": ""},
                t0 + (10 + i) * 60000)
        sig = signals()
        assert sig["tls_new"]["weight"] == 0.5 and \
            sig["tls_new"]["times"] == 1, sig  # one new stack: one fact
        # a week of ann's own mail to the few people she writes to (her
        # habit: known recipients), in sizes of all kinds
        for i in range(60):
            msg(20 + i, 3000 + (i * 7919) % 90000, tls,
                t0 + 3600000 + i * 7 * 3600000 // 4,
                rcpt="friend%d@home.example" % (i % 5))
        # the template: 6,000 bytes +- 40, a new address every 5 minutes,
        # for up to 6 hours
        t1 = t0 + 8 * 86400000
        owned = {}
        accepted = []
        for i in range(72):
            accepted.append(msg(100 + i, 6000 + (i * 7) % 40, tls,
                                t1 + i * 300000,
                                rcpt="x%d@victims.example" % i))
            owned[i] = signals()["owned_sender"]["times"]
        sig = signals()
        assert all(accepted[:37]), accepted  # 3 hours: nothing to see yet
        assert sig["uniform_size"]["weight"] == 6 and \
            sig["uniform_size"]["times"] >= 1, sig  # from 3 h, hourly
        # the first 36 messages (3 h) earned the credit each; after the
        # template was seen, once an hour
        assert owned[35] - owned[0] == 35, owned
        assert owned[49] - owned[36] <= 1, owned
        # and what it adds up to is the quiet zombie's: deferred
        assert not accepted[-1], d.ctl("show", "ann@isp.example")["evidence"]
        assert d.ctl("show", "ann@isp.example")["state"] == "THROTTLED"
    finally:
        assert d.stop() == 0


def _show(d, who):
    return d.ctl("show", who)


def _score(d, who):
    m = re.match(r"score (-?[0-9.]+)", _show(d, who)["evidence"])
    return float(m.group(1)) if m else 0.0


def _signals(d, who):
    return {x["signal"]: x for x in _show(d, who).get("signals", [])}


def test_evidence_survives_restart(tmp_path):
    """Evidence is stored: an account in the middle of detection keeps its
    score across a kill -9 (the checkpoints store it), every account keeps
    what it learned across a clean stop (the final checkpoint stores all
    of it), a release deletes the stored copy so that a crash cannot bring
    the spent evidence back, and a damaged record is logged and skipped."""
    d = Daemon(tmp_path, classes=CLASSES,
               extra={"daemon": "log_level: info"}).start()
    try:
        c = PolicyClient(d.policy_sock)
        for i in range(4):  # ann learns her own sender (score low)
            message(c, "ann@isp.example", "ann@isp.example",
                    ["mum@home.example"], "a%d" % i)
        zombie_traffic(c, "zed@isp.example", 3)  # mid-detection, not blocked
        zed = _show(d, "zed@isp.example")
        assert zed["state"] in ("WATCH", "NORMAL"), zed
        assert _signals(d, "zed@isp.example")["forged_sender"]["times"] == 3
        d.wait_checkpoint()
        d.kill9()
        d.start()
        zed2 = _signals(d, "zed@isp.example")
        assert zed2["forged_sender"]["times"] == 3, zed2
        assert _score(d, "zed@isp.example") > 2
        # ann's score stayed low: not stored by the checkpoints, lost
        assert "signals" not in _show(d, "ann@isp.example") or \
            not _signals(d, "ann@isp.example")
        c = PolicyClient(d.policy_sock)
        for i in range(4):
            message(c, "ann@isp.example", "ann@isp.example",
                    ["mum@home.example"], "b%d" % i)
        assert d.stop() == 0  # clean: all evidence stored
        assert "with evidence" in d.read_log()
        d.start()
        assert "restored the evidence of 2 accounts" in d.read_log()
        ann = _show(d, "ann@isp.example")
        assert ann["baseline"]["senders_owned"] == 1, ann
        assert _signals(d, "ann@isp.example")["owned_sender"]["times"] == 4
        # block zed, release it: the evidence is spent, and stays spent
        c = PolicyClient(d.policy_sock)
        zombie_traffic(c, "zed@isp.example", 16)
        assert _show(d, "zed@isp.example")["state"] == "BLOCKED"
        d.wait_checkpoint()
        subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "release",
                        "zed@isp.example", "--reason", "cleaned"],
                       check=True, capture_output=True)
        d.wait_checkpoint()
        d.kill9()
        d.start()
        zed3 = _show(d, "zed@isp.example")
        assert zed3["state"] == "PROBATION", zed3
        assert _score(d, "zed@isp.example") < 1, zed3
        d.stop()
        # a damaged record: skipped with a warning, the account starts clean
        import sqlite3
        db = sqlite3.connect(d.db)
        db.execute("UPDATE evidence SET data = x'00' WHERE key = "
                   "'u:ann@isp.example'")
        db.commit()
        db.close()
        d.start()
        assert "1 evidence records not read back" in d.read_log()
        assert not _signals(d, "ann@isp.example")
    finally:
        assert d.stop() == 0


def test_unknown_accounts_are_errors_unless_created(tmp_path):
    """A mistyped login is an error for show, history, block, release and
    allow (exit 1, the account named): it used to show an empty NORMAL
    account, and block created one in MANUAL_HOLD. --create acts on an
    account chokepoint has not seen yet (a block or an allowance made in
    advance); an account it has seen mail from is known."""
    d = Daemon(tmp_path).start()
    try:
        for args in (["show", "alcie@isp.example"],
                     ["history", "alcie@isp.example"],
                     ["block", "alcie@isp.example", "--reason", "typo"],
                     ["release", "alcie@isp.example", "--reason", "typo"],
                     ["allow", "alcie@isp.example", "--reason", "typo"]):
            r = ctl(d, *args)
            assert r.returncode == 1, (args, r)
            assert "unknown account 'u:alcie@isp.example'" in r.stdout, r
        assert d.ctl("status")["accounts"] == 0  # nothing was created
        c = PolicyClient(d.policy_sock)
        assert c.ask(rcpt_request(user="alice@isp.example")).startswith(
            "action=DUNNO")
        c.close()
        assert d.ctl("show", "alice@isp.example")["state"] == "NORMAL"
        r = ctl(d, "block", "new@isp.example", "--reason", "ticket 9",
                "--create")
        assert r.returncode == 0 and "MANUAL_HOLD" in r.stdout, r
        assert d.ctl("show", "new@isp.example")["state"] == "MANUAL_HOLD"
    finally:
        assert d.stop() == 0


def test_top_is_ordered_by_how_urgent_the_state_is(tmp_path):
    """`top` lists what the evidence stopped first, then manual holds, then
    watched, vouched-for and normal accounts, each by score: an ALLOWED
    account with a high score is below a MANUAL_HOLD with none (it was
    above: every state but NORMAL ranked alike, by score)."""
    d = Daemon(tmp_path, classes=CLASSES).start()
    try:
        assert ctl(d, "allow", "tool@isp.example", "--reason", "ticket 7",
                   "--create").returncode == 0
        assert ctl(d, "block", "held@isp.example", "--reason", "ticket 8",
                   "--create").returncode == 0
        c = PolicyClient(d.policy_sock)
        zombie_traffic(c, "tool@isp.example", 16)  # evidence, no action
        zombie_traffic(c, "zed@isp.example", 16, victims="w")
        c.close()
        top = d.ctl("top", "10")["accounts"]
        states = [(a["key"], a["state"]) for a in top]
        keys = [k for k, _ in states]
        assert states[0] == ("u:zed@isp.example", "BLOCKED"), states
        assert keys.index("u:held@isp.example") < \
            keys.index("u:tool@isp.example"), states
        tool = top[keys.index("u:tool@isp.example")]
        assert tool["state"] == "ALLOWED" and tool["score"] > 0, tool
    finally:
        assert d.stop() == 0


def test_refused_attempts_of_a_blocked_account_count_once_an_hour(tmp_path):
    """A blocked zombie keeps trying; its refused attempts are the same
    evidence again and are looked at once an hour at most: its score and
    signals stay as they were when it was blocked (they kept growing)."""
    d = Daemon(tmp_path, classes=CLASSES).start()
    try:
        c = PolicyClient(d.policy_sock)
        replies = zombie_traffic(c, "zed@isp.example", 16)
        assert any("blocked" in r for r in replies), replies
        before = d.ctl("show", "zed@isp.example")
        assert before["state"] == "BLOCKED"
        replies = zombie_traffic(c, "zed@isp.example", 30, victims="again")
        assert all("blocked" in r for r in replies if "action=" in r)
        after = d.ctl("show", "zed@isp.example")
        assert after["evidence"] == before["evidence"], \
            (before["evidence"], after["evidence"])
        assert after["baseline"]["messages_this_hour"] == \
            before["baseline"]["messages_this_hour"]
        assert [s["times"] for s in after["signals"]] == \
            [s["times"] for s in before["signals"]]
        c.close()
    finally:
        assert d.stop() == 0


def test_the_operator_is_recorded_by_name(tmp_path):
    """Under sudo every operator was "uid 0": the history records the
    person, from --by or sudo's SUDO_USER, with the uid that vouches."""
    d = Daemon(tmp_path).start()
    try:
        r = ctl(d, "block", "a@isp.example", "--reason", "ticket 1",
                "--create", "--by", "alice")
        assert r.returncode == 0, r
        env = dict(os.environ, SUDO_USER="bob")
        r = subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "release",
                            "a@isp.example", "--reason", "ticket 2"],
                           capture_output=True, text=True, timeout=HANG,
                           env=env)
        assert r.returncode == 0, r
        hist = d.ctl("history", "a@isp.example")["history"]
        assert [h["actor"] for h in hist] == ["bob (uid %d)" % os.getuid(),
                                              "alice (uid %d)" % os.getuid()]
        r = ctl(d, "block", "a@isp.example", "--reason", "x", "--by",
                "eve; rm -rf")
        assert r.returncode == 2 and "--by" in r.stderr, r
    finally:
        assert d.stop() == 0


def test_incident_numbers_are_shown_and_looked_up(tmp_path):
    """history gives each state change its number (the incident number a
    notice names); `chokepoint incident N` shows that change and its
    account; a number that is not one is an error."""
    d = Daemon(tmp_path).start()
    try:
        assert ctl(d, "block", "a@isp.example", "--reason", "ticket 3",
                   "--create").returncode == 0
        h = d.ctl("history", "a@isp.example")["history"]
        n = h[0]["incident"]
        assert n > 0 and h[0]["to"] == "MANUAL_HOLD", h
        r = ctl(d, "incident", str(n))
        assert r.returncode == 0, r
        assert r.stdout.startswith("account u:a@isp.example\n"), r.stdout
        assert "#%d " % n in r.stdout and "MANUAL_HOLD" in r.stdout, r.stdout
        text = ctl(d, "history", "a@isp.example").stdout
        assert "#%d " % n in text, text
        r = ctl(d, "incident", str(n + 1000))
        assert r.returncode == 1 and "no such incident" in r.stdout, r
        r = ctl(d, "incident", "x")
        assert r.returncode == 1 and "incident number" in r.stdout, r
    finally:
        assert d.stop() == 0


def webhook_daemon(tmp_path, hook, more="", **kw):
    """A daemon whose incidents go to `hook` (no customer mail); `more`:
    lines for its notify section; kw: Daemon's."""
    return Daemon(tmp_path, classes=CLASSES + (
        "notify:\n  from: abuse@isp.example\n  customer: false\n"
        "  webhook: %s\n  retry: 100ms\n" % hook.url + more), **kw)


def test_block_without_notifying(tmp_path):
    """`block --no-notify`: the account is held and the change recorded,
    and the customer is not told (an internal investigation); the webhook,
    the ISP's own ticket system, still hears of it (test_notify.py checks
    the customer's side through Postfix)."""
    import json
    from test_containment import Webhook
    hook = Webhook()
    d = webhook_daemon(tmp_path, hook)
    try:
        d.start()
        r = ctl(d, "block", "quiet@isp.example", "--reason", "ticket 5",
                "--create", "--no-notify", "--by", "tester")
        assert r.returncode == 0 and "MANUAL_HOLD" in r.stdout, r
        r = ctl(d, "block", "loud@isp.example", "--reason", "ticket 6",
                "--create")
        assert r.returncode == 0, r
        wait_for(lambda: d.ctl("status")["outbox"]["sent"] >= 2,
                 what="the webhooks of both blocks")
        accounts = [json.loads(p[2])["account"] for p in hook.posts]
        assert accounts == ["u:quiet@isp.example", "u:loud@isp.example"], \
            accounts
        assert d.ctl("show", "quiet@isp.example")["state"] == "MANUAL_HOLD"
        assert "quiet@isp.example: customer not notified (tester (uid %d) " \
            "chose --no-notify)" % os.getuid() in d.read_log(), \
            d.read_log()[-2000:]
        r = ctl(d, "status", "--no-notify")
        assert r.returncode == 2 and "--no-notify goes with" in r.stderr, r
    finally:
        assert d.stop() == 0
        hook.close()


def test_show_lists_what_the_account_used_and_its_notices(tmp_path):
    """zed's PC is a zombie behind two addresses, introducing itself with
    two HELO names. `show` lists the login, the client addresses and the
    HELOs its mail came with while under suspicion, and the notices of its
    incident: the webhook that was sent, and the one to a dead receiver
    that was given up. An account never under suspicion lists none."""
    import json
    from test_containment import Webhook
    hook = Webhook()
    # log_level info: what show lists does not depend on what is logged
    d = webhook_daemon(tmp_path, hook, "  attempts: 2\n",
                       extra={"daemon": "log_level: info"})
    try:
        d.start()
        c = PolicyClient(d.policy_sock)
        message(c, "ann@isp.example", "ann@isp.example",
                ["mum@home.example"], "a0")
        for i in range(16):
            inst = "z%d" % i
            helo = "DESKTOP-%d" % (i % 2)
            client = "198.51.100.%d" % (7 + i % 2)
            for r in range(6):
                rep = c.ask(rcpt_request(
                    user="zed@isp.example", sender="x%d@forged%d.example" %
                    (i, i), recipient="v%d.%d@free%d.example" % (i, r, r),
                    instance=inst, client=client, helo_name=helo))
                if "action=DUNNO" not in rep:
                    break
        wait_for(lambda: d.ctl("status")["outbox"]["sent"] >= 1,
                 what="the webhook of zed's incident")
        acct = d.ctl("show", "zed@isp.example")
        assert acct["state"] == "BLOCKED", acct["state"]
        seen = acct["seen"]
        assert [x["value"] for x in seen["logins"]] == ["zed@isp.example"]
        assert sorted(x["value"] for x in seen["clients"]) == \
            ["198.51.100.7", "198.51.100.8"], seen
        assert sorted(x["value"] for x in seen["helos"]) == \
            ["DESKTOP-0", "DESKTOP-1"], seen
        assert all(x["requests"] >= 1 and x["first"] <= x["last"]
                   for k in ("logins", "clients", "helos") for x in seen[k])
        incident = json.loads(hook.posts[0][2])["incident"]
        notices = acct["notices"]
        assert [(n["what"], n["to"], n["incident"], n["outcome"])
                for n in notices] == [("webhook", hook.url, incident,
                                       "sent")], notices
        assert acct["held"] == [], acct["held"]
        # the decision that blocked it names the incident, in the decision
        # log and in the log line
        changes = [x for x in d.decisions_list()
                   if x.get("previous_state") and x["state"] == "BLOCKED"]
        assert [x["incident"] for x in changes] == [incident], changes
        assert re.search(r"state=\S+->BLOCKED incident=%d\b" % incident,
                         d.read_log())
        assert re.search(r"-> BLOCKED by evidence \(incident %d\)" %
                         incident, d.read_log())
        # the incident, looked up by the number its notices carry
        inc = d.ctl("incident", str(incident))
        assert inc["key"] == "u:zed@isp.example", inc
        assert [(n["what"], n["outcome"]) for n in inc["notices"]] == \
            [("webhook", "sent")], inc
        assert re.search(r"#%d\s+webhook\s+\S+\s+sent" % incident,
                         ctl(d, "incident", str(incident)).stdout)
        text = ctl(d, "show", "zed@isp.example").stdout
        assert "198.51.100.7" in text and "DESKTOP-1" in text, text
        assert re.search(r"#%d\s+webhook\s+%s\s+sent" % (
            incident, re.escape(hook.url)), text), text
        # released to PROBATION: its accepted mail (DUNNO, not logged at
        # info) from a new address is listed too
        assert ctl(d, "release", "zed@isp.example", "--note",
                   "cleaned").returncode == 0
        rep = c.ask(rcpt_request(user="zed@isp.example",
                                 sender="zed@isp.example",
                                 recipient="mum@home.example",
                                 instance="p1", client="203.0.113.9"))
        assert "action=DUNNO" in rep or "action=FILTER" in rep, rep
        assert "203.0.113.9" in [x["value"] for x in d.ctl(
            "show", "zed@isp.example")["seen"]["clients"]]
        ann = d.ctl("show", "ann@isp.example")
        assert ann["seen"]["clients"] == [] and ann["notices"] == [], ann
        assert "(nothing: not under suspicion" in ctl(
            d, "show", "ann@isp.example").stdout
        # a webhook nobody answers: given up after notify.attempts, and
        # shown so
        hook.close()
        r = ctl(d, "block", "bob@isp.example", "--reason", "ticket 9",
                "--create")
        assert r.returncode == 0, r
        m = re.search(r"u:bob@isp\.example: NORMAL -> MANUAL_HOLD "
                      r"\(incident (\d+)\)", r.stdout)
        assert m and int(m.group(1)) > incident, r.stdout
        wait_for(lambda: d.ctl("status")["outbox"]["failed"] >= 1,
                 what="the webhook to a closed port given up")
        n = d.ctl("show", "bob@isp.example")["notices"]
        assert len(n) == 1 and n[0]["outcome"].startswith("given up: ") and \
            n[0]["attempts"] == 2, n
        # another account's incident lists only its own notices
        assert d.ctl("incident", str(incident))["notices"] == inc["notices"]
        assert d.ctl("incident", str(n[0]["incident"]))["notices"] == n
    finally:
        assert d.stop() == 0
        hook.close()


def test_incident_lists_its_notices_however_many_came_after(tmp_path):
    """`incident N` finds N's notices in the store even when the account
    has had a hundred jobs since (they were cut at the account's newest
    100 before N's were picked out)."""
    from test_containment import Webhook
    hook = Webhook()
    d = webhook_daemon(tmp_path, hook, "  max_per_hour: 1000\n")
    try:
        d.start()
        first = d.ctl("block", "flap@isp.example", "--note", "t0",
                      "--create")["incident"]
        assert d.ctl("release", "flap@isp.example", "--note", "r0")["to"] \
            == "PROBATION"
        for i in range(50):
            d.ctl("block", "flap@isp.example", "--note", "t%d" % i)
            d.ctl("release", "flap@isp.example", "--note", "r%d" % i)
        wait_for(lambda: d.ctl("status")["outbox"]["sent"] >= 102,
                 what="the 102 webhooks of 51 blocks and releases",
                 timeout=60)
        inc = d.ctl("incident", str(first))
        assert [(n["what"], n["incident"], n["outcome"])
                for n in inc["notices"]] == [("webhook", first, "sent")], inc
    finally:
        assert d.stop() == 0
        hook.close()
