"""Containment on a real Postfix: delivery outcomes from the mail log as
evidence (smtp-sink refusing recipients with 550 5.1.1), notifications
(customer mail and ARF report through Postfix, JSON webhook to a local HTTP
server), retroactive hold of queued mail (postsuper) and its release,
`allow`, and self-service release limits."""
import os
import re
import subprocess
import time

import pytest

import postfix as pfmod
from cpd import CHOKEPOINT, HANG, Daemon
from test_postfix import (DETECTION_CLASSES, context, login, marker,
                          refusals, send, show)

USERS = ["ivan", "kim", "lena", "mia", "nina", "otto", "pete", "quinn"]


@pytest.fixture(scope="module")
def pf():
    yield from pfmod.running(USERS)


@pytest.fixture
def cpd(pf, request):
    """Factory: a started chokepointd whose policy socket Postfix uses and
    which follows this Postfix's mail log."""
    made = []
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)
    name = name[:30] + "_" + name[-10:]  # parametrized names stay distinct

    def make(customer_map="", extra=None):
        d = os.path.join(pf.base, "cpd-%s-%d" % (name, len(made)))
        os.makedirs(d)
        os.chmod(d, 0o755)
        ex = {"delivery": "log: %s\npoll: 200ms" % pf.maillog_path}
        ex.update(extra or {})
        sections = "".join("%s:\n%s" % (k, "".join(
            "  %s\n" % l for l in v.strip().splitlines()))
            for k, v in ex.items() if k in ("delivery", "notify",
                                            "containment", "detection"))
        daemon = Daemon(d, classes=DETECTION_CLASSES + sections,
                        customer_map=customer_map,
                        extra={k: v for k, v in ex.items()
                               if k not in ("delivery", "notify",
                                            "containment", "detection")})
        made.append(daemon)
        pf.use_policy_socket(daemon.policy_sock)
        daemon.start()
        return daemon

    yield make
    for daemon in made:
        daemon.stop()


def wait_for(pred, timeout=HANG, step=0.2):
    """`pred`'s value once true, or its last value after the hang guard."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def test_bounces_at_next_hop_raise_the_score(pf, cpd):
    """ivan's PC mails a harvested list: the next hop (smtp-sink) refuses
    every recipient with 550 5.1.1. chokepointd reads the bounces from the
    mail log, attributes them to ivan by queue id and throttles him, with
    bad_recipient in `chokepoint show`. kim's mail is delivered and kim
    stays NORMAL."""
    daemon = cpd()
    accepted = 0
    for i in range(8):
        r = send(pf, "ivan", marker(), sender=login("ivan"),
                 to=["u%d.%d@%s" % (i, k, pfmod.BOUNCE_DOMAIN)
                     for k in range(3)])
        assert send(pf, "kim", marker(), sender=login("kim"),
                    to="friend@example.com").accepted
        if not r.accepted:
            assert "4.7.1" in refusals(r), r
            break
        accepted += 1
    assert accepted >= 2  # the evidence comes after delivery

    def throttled():
        return show(daemon, login("ivan"))["state"] in ("THROTTLED",
                                                        "BLOCKED")
    assert wait_for(throttled), show(daemon, login("ivan"))
    acct = show(daemon, login("ivan"))
    assert "bad_recipient" in acct["evidence"], acct
    assert acct["history"][0]["actor"] == "auto"
    assert "bad_recipient" in acct["history"][0]["reason"]
    # one signal alone never blocks
    assert acct["state"] == "THROTTLED", acct
    later = send(pf, "ivan", marker(), sender=login("ivan"))
    assert not later.accepted and "4.7.1" in refusals(later), later
    assert show(daemon, login("kim"))["state"] == "NORMAL"
    st = daemon.ctl("status")
    assert st["delivery"]["outcomes"] >= 3 * accepted, st


def test_a_mail_servers_bounces_are_no_evidence(pf, cpd):
    """otto's login is a company's mail server: it bounces the spam it
    received for a user who left to the spam's forged senders, with the
    null sender and one recipient each, and the next hop says 550 5.1.1
    to every one. Where a bounce goes is the spammer's choice, not the
    server's: the outcomes are read (delivery outcomes_relayed) and are no
    bad_recipient evidence; otto stays below THROTTLED. pete's PC mails
    the same addresses as himself and is throttled."""
    daemon = cpd()
    to = ["spam%d@%s" % (i, pfmod.BOUNCE_DOMAIN) for i in range(8)]
    for rcpt in to:
        r = send(pf, "otto", marker(), sender="<>", to=rcpt)
        assert r.accepted, "%r%s" % (r, context(pf, daemon))
    relayed = wait_for(lambda: daemon.ctl("status")["delivery"][
        "outcomes_relayed"] >= len(to))
    assert relayed, daemon.ctl("status")["delivery"]
    acct = show(daemon, login("otto"))
    assert "bad_recipient" not in acct["evidence"], acct
    assert acct["state"] in ("NORMAL", "WATCH"), acct
    for rcpt in to:
        if not send(pf, "pete", marker(), sender=login("pete"),
                    to=rcpt).accepted:
            break
    assert wait_for(lambda: show(daemon, login("pete"))["state"] ==
                    "THROTTLED"), show(daemon, login("pete"))
    assert show(daemon, login("otto"))["state"] in ("NORMAL", "WATCH")


class Webhook:
    """A local HTTP server (127.0.0.1, free port) recording POSTs; the
    first `fail_first` requests are answered 500, to exercise retries."""

    def __init__(self, fail_first=0):
        import http.server
        import threading
        hook = self
        self.posts = []
        self.fail_first = fail_first

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                hook.posts.append((self.path, dict(self.headers), body))
                code = 500 if len(hook.posts) <= hook.fail_first else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def zombie_until_blocked(pf, daemon, user, rounds=12):
    """Forged senders, fresh recipients, until 5.7.1; returns the round."""
    for i in range(rounds):
        spam = send(pf, user, marker(),
                    to=["v%d.%d@freemail%d.example" % (i, r, r)
                        for r in range(8)],
                    sender="x%d@forged%d.example" % (i, i))
        if "5.7.1" in refusals(spam):
            return i + 1
    raise AssertionError("not blocked" + context(pf, daemon))


def test_block_notifies_customer_abuse_desk_and_webhook(pf, cpd):
    """mia's PC is a zombie. When she is BLOCKED, chokepointd sends (once):
    a mail to her contact address from the customer map, an ARF report to
    the abuse desk (both through Postfix, to the sink), and a JSON webhook
    that is retried after a 500."""
    hook = Webhook(fail_first=1)
    try:
        daemon = cpd(
            customer_map="%s cust-77 contact=owner.mia@home.example\n" %
            login("mia"),
            extra={"notify": "sendmail: %s\nfrom: abuse@isp.example\n"
                             "abuse_to: abuse-desk@isp.example\n"
                             "webhook: %s\nretry: 300ms\nattempts: 3\n"
                             "reporting_mta: smtp.isp.example" % (
                                 pf.sendmail_command(), hook.url)})
        zombie_until_blocked(pf, daemon, "mia")
        cust = pf.wait_delivered("owner.mia@home.example", 1)
        assert len(cust) == 1, "no customer mail" + context(pf, daemon)
        # the notice names the login that was abused (the state is per
        # login; its colleagues' mail goes on)
        assert login("mia") in cust[0] and "X-Chokepoint-Incident:" in cust[0]
        assert re.search(r"(?m)^Auto-Submitted: auto-generated", cust[0])
        arf = pf.wait_delivered("Feedback-Type: abuse", 1)
        assert len(arf) == 1, "no ARF report" + context(pf, daemon)
        assert "report-type=feedback-report" in arf[0]
        assert "abuse-desk@isp.example" in arf[0]
        assert "text/rfc822-headers" in arf[0]
        assert "forged_sender" in arf[0]
        assert wait_for(lambda: len(hook.posts) >= 2), \
            "webhook not retried: %r" % hook.posts + context(pf, daemon)
        import json
        ev = json.loads(hook.posts[1][2])
        assert ev["event"] == "incident" and ev["state"] == "BLOCKED"
        assert ev["account"] == "u:" + login("mia")
        assert ev["customer"] == "cust-77"
        assert ev["incident"] > 0
        # the abuse desk finds it by that number (chokepoint incident N)
        inc = daemon.ctl("incident", str(ev["incident"]))
        assert inc["key"] == "u:" + login("mia"), inc
        assert inc["change"]["to"] == "BLOCKED", inc
        assert inc["change"]["incident"] == ev["incident"]
        hist = daemon.ctl("history", login("mia"))["history"]
        assert hist[0]["incident"] == ev["incident"], hist
        assert hook.posts[1][1]["Content-Type"] == "application/json"
        # once per incident: more refused mail sends nothing new
        for _ in range(3):
            assert not send(pf, "mia", marker()).accepted
        time.sleep(1.5)
        assert len(pf.delivered_with("owner.mia@home.example")) == 1
        assert len(hook.posts) == 2
        st = daemon.ctl("status")["outbox"]
        assert st["sent"] == 3 and st["retried"] == 1 and st["failed"] == 0, st
    finally:
        hook.close()


def test_notifications_over_smtp(pf, cpd):
    """notify.smtp: the ARF report is submitted over SMTP (libcurl) straight
    to an SMTP server (the sink), with no sendmail binary involved; a
    customer without contact= gets no mail (and the log says so)."""
    daemon = cpd(extra={"notify": "smtp: smtp://127.0.0.1:%d\n"
                                  "from: abuse@isp.example\n"
                                  "abuse_to: arf-smtp@isp.example\n"
                                  "reporting_mta: smtp.isp.example" %
                                  pf.sink_port})
    zombie_until_blocked(pf, daemon, "pete")
    arf = pf.wait_delivered("arf-smtp@isp.example", 1)
    assert len(arf) == 1, "no ARF report" + context(pf, daemon)
    assert "Feedback-Type: abuse" in arf[0]
    assert "Source-IP: 127.0.0.1" in arf[0]
    assert "no contact= in the customer map" in daemon.read_log()
    assert daemon.ctl("status")["outbox"]["sent"] == 1


def queued_ids(results):
    ids = []
    for r in results:
        m = re.search(r"queued as ([0-9A-Za-z]+)", r.out)
        assert m, r
        ids.append(m.group(1))
    return ids


def queue_names(pf, ids):
    return {q["queue_id"]: q["queue_name"] for q in pf.queue()
            if q["queue_id"] in ids}


CONTRIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "contrib")


@pytest.mark.parametrize("how", ["postsuper", "request"])
def test_block_holds_queued_mail_release_frees_it(pf, cpd, how, tmp_path):
    """nina's mail to a dead next hop sits in the queue. `chokepoint block`
    puts exactly her queued messages on hold (postsuper -h, queue ids
    recorded at END-OF-MESSAGE); `chokepoint release` takes them off hold.
    otto's queued mail is not touched. `postsuper`: the daemon runs
    postsuper itself; `request`: the shipped sandbox-friendly pair, where
    the daemon files a request (contrib/chokepoint-queue-request) and the
    root helper carries it out (contrib/chokepoint-postsuper, run here as
    its systemd path unit would)."""
    reqdir = str(tmp_path / "postsuper")
    os.makedirs(reqdir)
    if how == "postsuper":
        cmds = ("/usr/sbin/postsuper -c %s -h -" % pf.etc,
                "/usr/sbin/postsuper -c %s -H -" % pf.etc)
    else:
        cmds = ("%s/chokepoint-queue-request hold %s" % (CONTRIB, reqdir),
                "%s/chokepoint-queue-request release %s" % (CONTRIB, reqdir))

    def carry_out():
        if how == "request":
            subprocess.run([os.path.join(CONTRIB, "chokepoint-postsuper"),
                            reqdir, "-c", pf.etc], check=True,
                           capture_output=True, timeout=HANG)
        return True

    daemon = cpd(extra={"containment": "hold_command: %s\n"
                                       "release_command: %s" % cmds})
    stuck = "%s@%s" % ("x", pfmod.STUCK_DOMAIN)
    mine = queued_ids([send(pf, "nina", marker(), to=stuck,
                            sender=login("nina")) for _ in range(3)])
    other = queued_ids([send(pf, "otto", marker(), to=stuck,
                             sender=login("otto"))])
    try:
        assert wait_for(lambda: len(queue_names(pf, mine + other)) == 4)
        r = subprocess.run([CHOKEPOINT, "-s", daemon.admin_sock, "block",
                            login("nina"), "--reason", "ticket 99"],
                           capture_output=True, text=True, timeout=HANG)
        assert r.returncode == 0, r
        assert wait_for(lambda: carry_out() and
                        set(queue_names(pf, mine).values()) == {"hold"}), \
            queue_names(pf, mine) + context(pf, daemon)
        assert queue_names(pf, other)[other[0]] != "hold"
        # show: the queue ids its incident held, and the hold command
        # (listed while pending too; waited for until done)
        acct = wait_for(lambda: (lambda a: a["held"] and
                                 a["held"][0]["outcome"] != "pending" and a)(
            show(daemon, login("nina"))))
        assert acct, show(daemon, login("nina"))
        assert [sorted(h["queue_ids"]) for h in acct["held"]] == \
            [sorted(mine)], acct["held"]
        assert acct["held"][0]["outcome"] == "sent"
        assert [n["what"] for n in acct["notices"]] == ["hold"], \
            acct["notices"]
        r = subprocess.run([CHOKEPOINT, "-s", daemon.admin_sock, "release",
                            login("nina"), "--reason", "cleaned"],
                           capture_output=True, text=True, timeout=HANG)
        assert r.returncode == 0, r
        assert wait_for(lambda: carry_out() and
                        "hold" not in queue_names(pf, mine).values()
                        and len(queue_names(pf, mine)) == 3), \
            queue_names(pf, mine)
        log = daemon.read_log()
        # each names its incident (the state change's number; it said 0)
        held = re.search(r"holding 3 queued messages \(incident (\d+)\)", log)
        freed = re.search(r"releasing 3 queued messages \(incident (\d+)\)",
                          log)
        assert held and freed, log[-3000:]
        assert 0 < int(held.group(1)) < int(freed.group(1)), log[-3000:]
        assert re.search(r"hold sent \(incident %s," % held.group(1), log), \
            log[-3000:]
        assert os.listdir(reqdir) == []
    finally:
        subprocess.run(["postsuper", "-c", pf.etc, "-d", "-"],
                       input="\n".join(mine + other) + "\n", text=True,
                       capture_output=True)


def test_queue_ids_survive_a_restart(pf, cpd):
    """quinn's mail sits in the queue when chokepointd is killed with -9
    (after a checkpoint). After the restart a block still holds it: the
    queue ids recorded at END-OF-MESSAGE were kept in the store."""
    daemon = cpd(extra={"containment": "hold_command: /usr/sbin/postsuper "
                                       "-c %s -h -" % pf.etc})
    stuck = "%s@%s" % ("y", pfmod.STUCK_DOMAIN)
    mine = queued_ids([send(pf, "quinn", marker(), to=stuck,
                            sender=login("quinn")) for _ in range(2)])
    try:
        assert wait_for(lambda: len(queue_names(pf, mine)) == 2)
        assert daemon.ctl("status")["delivery"]["queue_ids"] >= 2
        daemon.wait_checkpoint()
        daemon.kill9()
        daemon.start()
        assert "restored" in daemon.read_log() and \
            "queue ids of queued mail" in daemon.read_log()
        r = subprocess.run([CHOKEPOINT, "-s", daemon.admin_sock, "block",
                            login("quinn"), "--reason", "ticket 100"],
                           capture_output=True, text=True, timeout=HANG)
        assert r.returncode == 0, r
        assert wait_for(lambda: set(queue_names(pf, mine).values()) ==
                        {"hold"}), queue_names(pf, mine) + context(pf, daemon)
        assert "holding 2 queued messages" in daemon.read_log()
    finally:
        subprocess.run(["postsuper", "-c", pf.etc, "-d", "-"],
                       input="\n".join(mine) + "\n", text=True,
                       capture_output=True)


def test_suspect_accounts_leave_through_the_reputation_pool(pf, cpd):
    """containment.suspect_transport: lena is released after a block
    (PROBATION): her mail is answered FILTER and leaves through the
    smtp-suspect transport (its own HELO at the next hop); kim's mail
    leaves through the normal one."""
    daemon = cpd(extra={"containment": "suspect_transport: "
                                       "smtp-suspect:[127.0.0.1]:%d" %
                                       pf.sink_port})
    for args in (["block", login("lena"), "--reason", "ticket 5", "--create"],
                 ["release", login("lena"), "--reason", "cleaned"]):
        r = subprocess.run([CHOKEPOINT, "-s", daemon.admin_sock] + args,
                           capture_output=True, text=True, timeout=HANG)
        assert r.returncode == 0, r
    assert show(daemon, login("lena"))["state"] == "PROBATION"
    lena, kim = marker(), marker()
    assert send(pf, "lena", lena, sender=login("lena")).accepted
    assert send(pf, "kim", kim, sender=login("kim")).accepted
    got = pf.wait_delivered(lena, 1)
    assert len(got) == 1, "not delivered" + context(pf, daemon)
    assert "X-Helo-Args: suspect.test.example" in got[0], got[0][:400]
    other = pf.wait_delivered(kim, 1)
    assert len(other) == 1 and "suspect.test.example" not in other[0]
    acct = show(daemon, login("lena"))
    assert acct["recent"][0]["action"] == "FILTER", acct["recent"]
    assert acct["recent"][0]["text"].startswith("smtp-suspect:")
