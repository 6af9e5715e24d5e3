"""Evidence and states per login, limits per customer (issue 11), over the
raw policy protocol against a real chokepointd: a stolen staff login is
stopped while its colleagues go on sending; `show c:CUSTOMER` lists the
customer's logins; a person's hold of the customer covers them all; a new
account is throttled but blocked only on the receivers' word (the learning
period); the recipients delivered to survive a restart; a state database
of the format before per-login states is upgraded at start; `chokepoint learn` stores habits the daemon starts
with."""
import gzip
import os
import sqlite3
import subprocess
import time

from cpd import CHOKEPOINT, HANG, Daemon, PolicyClient, rcpt_request
from test_detection import CLASSES, message, zombie_traffic

MAP = ("office@acme.example acme residential "
       "domains=acme.example,acme-shop.example\n"
       "anna@acme.example   acme\n"
       "bob@acme.example    acme\n"
       "eve@acme.example    acme\n")


def ctl(d, *args):
    return subprocess.run([CHOKEPOINT, "-s", d.admin_sock] + list(args),
                          capture_output=True, text=True, timeout=HANG)


def colleague_mail(c, login, n, tag):
    """n messages of a person of the company, as herself, to a friend."""
    out = []
    for i in range(n):
        out += message(c, login, login, ["friend@home.example"],
                       "%s%s%d" % (login, tag, i))
    return out


def test_stolen_login_is_stopped_colleagues_go_on(tmp_path):
    d = Daemon(tmp_path, classes=CLASSES, customer_map=MAP,
               extra={"daemon": "log_level: info"}).start()
    try:
        c = PolicyClient(d.policy_sock)
        colleague_mail(c, "anna@acme.example", 3, "a")
        replies = zombie_traffic(c, "bob@acme.example", 16)
        assert any("5.7.1" in r and "blocked" in r for r in replies), replies
        # anna, and the shared office login sending as a colleague at the
        # company's other domain, are not touched
        assert all("action=DUNNO" in r for r in
                   colleague_mail(c, "anna@acme.example", 3, "b"))
        assert all("action=DUNNO" in r for r in message(
            c, "office@acme.example", "sales@acme-shop.example",
            ["client@other.example"], "o1"))
        bob = d.ctl("show", "bob@acme.example")
        assert (bob["account"], bob["key"], bob["customer"], bob["state"]) \
            == ("u:bob@acme.example", "c:acme", "acme", "BLOCKED"), bob
        assert bob["customer_state"] == "NORMAL"
        assert d.ctl("show", "anna@acme.example")["state"] == "NORMAL"
        # the customer lists its logins with their states
        cust = d.ctl("show", "c:acme")
        states = {x["login"]: x["state"] for x in cust["logins"]}
        assert states == {"office@acme.example": "NORMAL",
                          "anna@acme.example": "NORMAL",
                          "bob@acme.example": "BLOCKED",
                          "eve@acme.example": "NORMAL"}, cust
        assert cust["logins_compromised"] == 1
        unseen = [x for x in cust["logins"]
                  if x["login"] == "eve@acme.example"][0]
        assert unseen["seen"] is False
        # a second stolen login: shown at the customer's level
        zombie_traffic(c, "eve@acme.example", 16, victims="w")
        cust = d.ctl("show", "c:acme")
        assert cust["logins_compromised"] == 2, cust
        text = ctl(d, "show", "c:acme").stdout
        assert "2 of its logins are throttled or blocked at once" in text, text
        assert "the customer's own record; each login has a state" in text
        # top: the stopped logins first; the customer's record of the
        # habits its logins share (NORMAL, no evidence either way) is not
        # a row of its own
        top = d.ctl("top")["accounts"]
        assert {x["key"] for x in top[:2]} == {"u:bob@acme.example",
                                               "u:eve@acme.example"}, top
        assert "c:acme" not in [x["key"] for x in top], top
        # and said in the log when the second one is stopped
        log = d.read_log()
        assert ("customer acme: 2 of its 4 logins are throttled or blocked "
                "at once") in log, log[-2000:]
        text = ctl(d, "show", "bob@acme.example").stdout
        assert "account u:bob@acme.example  customer acme" in text, text
        assert "limits and the customer's own state: c:acme (NORMAL)" in text
        # the decision log names both: the limits' key and the account
        refused = [x for x in d.decisions_list()
                   if x.get("account") == "u:bob@acme.example" and
                   x["action"] == "REJECT"]
        assert refused and refused[-1]["key"] == "c:acme", refused[-1:]
    finally:
        assert d.stop() == 0


def test_a_hold_of_the_customer_covers_its_logins(tmp_path):
    """`chokepoint block c:CUSTOMER` (a person's MANUAL_HOLD on the
    customer's own record) refuses every login's mail; releasing it
    restores them, while a login's own state is its own."""
    d = Daemon(tmp_path, classes=CLASSES, customer_map=MAP).start()
    try:
        c = PolicyClient(d.policy_sock)
        assert all("action=DUNNO" in r for r in
                   colleague_mail(c, "anna@acme.example", 1, "a"))
        r = ctl(d, "block", "c:acme", "--reason", "contract ended")
        assert r.returncode == 0 and "MANUAL_HOLD" in r.stdout, r
        for who in ("anna@acme.example", "office@acme.example"):
            reply = colleague_mail(c, who, 1, "h")[-1]
            assert "5.7.1" in reply, reply
        anna = d.ctl("show", "anna@acme.example")
        assert anna["state"] == "NORMAL"
        assert anna["customer_state"] == "MANUAL_HOLD", anna
        hold = [x for x in d.decisions_list()
                if x.get("customer_state") == "MANUAL_HOLD"]
        assert hold, d.decisions_list()[-3:]
        r = ctl(d, "release", "c:acme", "--reason", "renewed")
        assert r.returncode == 0, r
        assert all("action=DUNNO" in r for r in
                   colleague_mail(c, "anna@acme.example", 1, "r"))
        hist = d.ctl("history", "c:acme")["history"]
        assert [h["to"] for h in hist][:2] == ["PROBATION", "MANUAL_HOLD"]
    finally:
        assert d.stop() == 0


def test_new_account_blocked_only_on_the_receivers_word(tmp_path):
    """The learning period (detection.learning, shipped 50 messages): a
    brand-new login that behaves like a zombie is throttled, never
    blocked, on the envelope's evidence alone; once the mail log says its
    recipients do not exist, it is blocked."""
    log = tmp_path / "mail.log"
    log.write_text("")
    d = Daemon(tmp_path / "d", learning=None, classes=CLASSES +
               "delivery:\n  log: %s\n  poll: 100ms\n" % log).start()
    try:
        c = PolicyClient(d.policy_sock)
        replies = []
        for i in range(30):
            rcpts = ["v%d.%d@free%d.example" % (i, r, r) for r in range(6)]
            for rc in rcpts:
                replies.append(c.ask(rcpt_request(
                    user="zed@isp.example", sender="x%d@forged.example" % i,
                    recipient=rc, instance="z%d" % i)))
                if "action=DUNNO" not in replies[-1]:
                    break
            else:
                replies.append(c.ask(rcpt_request(
                    user="zed@isp.example", sender="x%d@forged.example" % i,
                    recipient="", instance="z%d" % i,
                    state="END-OF-MESSAGE", recipient_count="6",
                    queue_id="A1B2C%05d" % i)))
        assert any("DEFER_IF_PERMIT" in r for r in replies), replies
        assert not any("REJECT" in r for r in replies), replies
        zed = d.ctl("show", "zed@isp.example")
        assert zed["state"] == "THROTTLED", zed
        # what the next hop said about the messages it accepted
        accepted = [i for i in range(30) if any(
            "A1B2C%05d" % i in x.get("queue_id", "") and
            x["stage"] == "END-OF-MESSAGE" for x in d.decisions_list())]
        lines = []
        for i in range(8):
            for r in range(3):
                lines.append(
                    "Dec  5 10:00:%02d mx postfix/smtp[9]: A1B2C%05d: "
                    "to=<v%d.%d@free%d.example>, relay=mx[192.0.2.1]:25, "
                    "delay=1, dsn=5.1.1, status=bounced (user unknown)\n"
                    % (i, i, i, r, r))
        with open(log, "a") as f:
            f.writelines(lines)
        deadline = time.time() + HANG
        while time.time() < deadline and \
                d.ctl("show", "zed@isp.example")["state"] != "BLOCKED":
            time.sleep(0.2)
        zed = d.ctl("show", "zed@isp.example")
        assert zed["state"] == "BLOCKED", (zed["evidence"], accepted)
        assert "bad_recipient" in zed["evidence"]
    finally:
        assert d.stop() == 0


def test_delivered_recipients_survive_a_restart(tmp_path):
    """The table of recipients the next hop accepted is kept across a
    restart: a bounce from an address ann's mail reached before the
    restart is a list going stale (stale_recipient), not a harvested
    address (bad_recipient)."""
    log = tmp_path / "mail.log"
    log.write_text("")
    d = Daemon(tmp_path / "d", classes=CLASSES +
               "delivery:\n  log: %s\n  poll: 100ms\n" % log).start()

    def mail(c, qid):
        for attrs in (dict(recipient="pal@friend.example"),
                      dict(recipient="", state="END-OF-MESSAGE",
                           recipient_count="1", queue_id=qid)):
            r = c.ask(rcpt_request(user="ann@isp.example",
                                   sender="ann@isp.example",
                                   instance=qid, **attrs))
            assert "action=DUNNO" in r, r

    def outcome(qid, dsn, status):
        with open(log, "a") as f:
            f.write("Dec  5 10:00:00 mx postfix/smtp[9]: %s: "
                    "to=<pal@friend.example>, relay=mx[192.0.2.1]:25, "
                    "delay=1, dsn=%s, status=%s (250 ok)\n"
                    % (qid, dsn, status))

    def evidence_with(signal):
        """ann's evidence once it shows `signal` (or after the hang
        guard)."""
        deadline = time.time() + HANG
        while True:
            ev = d.ctl("show", "ann@isp.example")["evidence"]
            if signal in ev or time.time() > deadline:
                return ev
            time.sleep(0.1)

    try:
        c = PolicyClient(d.policy_sock)
        mail(c, "D1E2F00001")
        outcome("D1E2F00001", "2.0.0", "sent")
        assert "delivered" in evidence_with("delivered")
        assert d.stop() == 0
        d.start()
        assert "restored 1 recipients delivered to" in d.read_log(), \
            d.read_log()[-1500:]
        c = PolicyClient(d.policy_sock)
        mail(c, "D1E2F00002")
        outcome("D1E2F00002", "5.1.1", "bounced")
        ev = evidence_with("stale_recipient")
        assert "stale_recipient" in ev and "bad_recipient" not in ev, ev
    finally:
        assert d.stop() == 0


def old_database(path):
    """A state database as chokepointd wrote it before evidence and states
    were kept per login (no meta 'format'; customers' states)."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
        CREATE TABLE accounts(key TEXT PRIMARY KEY, t INTEGER NOT NULL,
            data BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE account_states(key TEXT PRIMARY KEY,
            state INTEGER NOT NULL, repeat INTEGER NOT NULL,
            since INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE history(id INTEGER PRIMARY KEY, key TEXT NOT NULL,
            t INTEGER NOT NULL, from_state TEXT NOT NULL,
            to_state TEXT NOT NULL, actor TEXT NOT NULL,
            reason TEXT NOT NULL);
        CREATE TABLE evidence(key TEXT PRIMARY KEY, t INTEGER NOT NULL,
            data BLOB NOT NULL) WITHOUT ROWID;
        INSERT INTO account_states VALUES ('c:acme', 2, 0, 1790000000);
        INSERT INTO account_states VALUES ('c:globex', 4, 0, 1790000000);
        INSERT INTO account_states VALUES ('u:solo@isp.example', 3, 1,
                                           1790000000);
        INSERT INTO evidence VALUES ('c:acme', 1790000000000, x'43504556');
    """)
    db.commit()
    db.close()


def test_upgrade_from_customer_states(tmp_path):
    """The first start on a database of the old format: a customer's
    automatic state (THROTTLED) is reset, with a history row, its
    evidence dropped; a person's hold of a customer stays and covers its
    logins; a login's block stays. The second start changes nothing."""
    d = Daemon(tmp_path, classes=CLASSES,
               customer_map=MAP + "gina@globex.example globex\n",
               extra={"daemon": "log_level: info"})
    old_database(d.db)
    d.start()
    try:
        log = d.read_log()
        assert "upgraded from format 1" in log, log
        assert "1 customers' automatic states reset" in log, log
        acme = d.ctl("show", "c:acme")
        assert acme["state"] == "NORMAL", acme
        assert acme["history"][0]["actor"] == "upgrade", acme["history"]
        assert acme["history"][0]["from"] == "THROTTLED"
        assert d.ctl("show", "c:globex")["state"] == "MANUAL_HOLD"
        assert d.ctl("show", "solo@isp.example")["state"] == "BLOCKED"
        c = PolicyClient(d.policy_sock)
        assert "5.7.1" in colleague_mail(c, "gina@globex.example", 1, "g")[-1]
        assert all("action=DUNNO" in r for r in
                   colleague_mail(c, "anna@acme.example", 1, "a"))
        db = sqlite3.connect(d.db)
        assert db.execute("SELECT count(*) FROM evidence WHERE key = "
                          "'c:acme'").fetchone()[0] == 0
        assert db.execute("SELECT v FROM meta WHERE k = 'format'"
                          ).fetchone()[0] == "2"
        db.close()
    finally:
        assert d.stop() == 0
    d.start()
    try:
        assert d.read_log().count("upgraded from format") == 1
        assert d.ctl("show", "c:globex")["state"] == "MANUAL_HOLD"
    finally:
        assert d.stop() == 0


def mail_log_lines(day, i, login, sender, rcpts, ip):
    t = "2026-11-%02dT10:%02d:00.000000+00:00 mx" % (day, i % 60)
    q = "C0FFEE%02d%02d" % (day, i)
    out = ["%s postfix/submission/smtpd[1%02d]: connect from pc[%s]\n" %
           (t, i, ip),
           "%s postfix/submission/smtpd[1%02d]: Anonymous TLS connection "
           "established from pc[%s]: TLSv1.3 with cipher "
           "TLS_AES_256_GCM_SHA384 (256/256 bits)\n" % (t, i, ip),
           "%s postfix/submission/smtpd[1%02d]: %s: client=pc[%s], "
           "sasl_method=PLAIN, sasl_username=%s\n" % (t, i, q, ip, login),
           "%s postfix/qmgr[9]: %s: from=<%s>, size=2000, nrcpt=%d "
           "(queue active)\n" % (t, q, sender, len(rcpts))]
    for r in rcpts:
        out.append("%s postfix/smtp[8]: %s: to=<%s>, relay=mx[192.0.2.1]:25, "
                   "delay=1, dsn=2.0.0, status=sent (250 ok)\n" % (t, q, r))
    out.append("%s postfix/qmgr[9]: %s: removed\n" % (t, q))
    return out


def test_learn_then_start_warm(tmp_path):
    """`chokepoint learn` reads past logs (rotated, compressed, oldest
    first whatever order they are given in) into the state database; the
    daemon starts with those habits. It refuses while the daemon runs."""
    d = Daemon(tmp_path / "d", classes=CLASSES, customer_map=MAP,
               extra={"daemon": "log_level: info"})
    older = tmp_path / "mail.log.2.gz"
    newer = tmp_path / "mail.log.1"
    lines = []
    for day in range(1, 4):
        for i in range(12):
            lines += mail_log_lines(day, i, "anna@acme.example",
                                    "anna@acme.example",
                                    ["friend%d@home.example" % (i % 3)],
                                    "198.51.100.7")
    with gzip.open(older, "wt") as f:
        f.writelines(lines[:len(lines) // 2])
    newer.write_text("".join(lines[len(lines) // 2:]))
    r = subprocess.run([CHOKEPOINT, "learn", str(newer), str(older),
                        "--config", d.config, "--json"],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    import json
    out = json.loads(r.stdout)
    assert out["messages"] == 36 and out["files"] == 2, out
    assert out["first"].startswith("2026-11-01T10:00"), out
    assert out["accounts"] >= 1 and out["state"] == d.db
    d.start()
    try:
        assert "restored the evidence of" in d.read_log()
        anna = d.ctl("show", "anna@acme.example")
        b = anna["baseline"]
        assert b["messages_learned"] >= 30 and b["senders_owned"] == 1, anna
        assert anna["state"] == "NORMAL" and "signals" not in anna or \
            not anna["signals"], anna  # habits only: no suspicion
        # a daemon is running on this state: learn refuses
        r = subprocess.run([CHOKEPOINT, "learn", str(newer), "--config",
                            d.config], capture_output=True, text=True,
                           timeout=HANG)
        assert r.returncode == 1 and "chokepointd is running" in r.stderr, r
    finally:
        assert d.stop() == 0
