"""Notifications on a real Postfix (issue 14 item 5): what the customer is
told (the abused login, plain words, local time, never the abuse desk's
internal note), the release notice and the webhook's "released" event,
--no-notify, HMAC-signed webhooks checked by a receiver with Python's hmac
module, and the ARF report parsed with Python's email package."""
import email
import email.policy
import hashlib
import hmac
import json
import os
import subprocess
import time

import pytest

import postfix as pfmod
from cpd import CHOKEPOINT, Daemon
from test_containment import Webhook, cpd, wait_for, zombie_until_blocked  # noqa: F401
from test_postfix import DETECTION_CLASSES, context, login

USERS = ["rita", "sam", "tom", "ulla", "vera", "wim"]
TZ = "CET-1CEST,M3.5.0,M10.5.0/3"  # no tzdata needed


@pytest.fixture(scope="module")
def pf():
    yield from pfmod.running(USERS)


def notify_section(pf, desk, hook=None, extra=""):
    """notify: through this Postfix; the ARF reports to `desk` (one per
    test: the sink is the module's)."""
    return ("sendmail: %s\nfrom: abuse@isp.example\nabuse_to: %s\n"
            "retry: 300ms\nattempts: 3\nreporting_mta: smtp.isp.example\n" %
            (pf.sendmail_command(), desk) +
            ("webhook: %s\n" % hook.url if hook else "") + extra)


def parse(raw):
    """The sink's text of a message as a parsed email (its own headers
    first: the sink adds none before them)."""
    return email.message_from_string(raw, policy=email.policy.default)


def body_of(msg):
    return msg.get_body(("plain",)).get_content()


def ctl(daemon, *args):
    return subprocess.run([CHOKEPOINT, "-s", daemon.admin_sock] + list(args),
                          capture_output=True, text=True)


def test_customer_notice_plain_words_login_local_time(pf, cpd, monkeypatch):
    """rita's PC is a zombie with forged senders. Her notice names her
    login (not the customer id), says what was seen in plain words, gives
    the time in the host's zone (CET here), and has no scores or signal
    names."""
    monkeypatch.setenv("TZ", TZ)
    daemon = cpd(customer_map="%s cust-4711 contact=owner.rita@home.example\n"
                 % login("rita"), extra={"notify": notify_section(pf, "desk-rita@isp.example")})
    zombie_until_blocked(pf, daemon, "rita")
    got = pf.wait_delivered("owner.rita@home.example", 1)
    assert len(got) == 1, "no customer mail" + context(pf, daemon)
    msg = parse(got[0])
    text = body_of(msg)
    assert login("rita") in msg["Subject"], msg["Subject"]
    assert "your mail account %s." % login("rita") in text, text
    assert "cust-4711" not in text and "cust-4711" not in msg["Subject"]
    assert text.startswith("Hello,\n\nThis is an automatic message"), text
    assert "\n- mail sent in the name of sender addresses this account " \
           "had never used\n" in text, text
    # the address of the request that tipped the block, not "the last"
    assert "\nSome of this mail came from the internet address " \
           "127.0.0.1.\n" in text, text
    # no help_url: the way back is a reply to notify.from, the desk
    assert msg["From"] == "abuse@isp.example", msg["From"]
    assert "reply to this message to have the\nblock lifted" in text, text
    assert "customer support" not in text, text
    for raw in ("forged_sender", "new_recipient", "score", "+"):
        assert raw not in text, (raw, text)
    assert " CET we blocked" in text or " CEST we blocked" in text, text


def test_note_stays_internal_tell_reaches_customer_release_notifies(
        pf, cpd, tmp_path):
    """block --note is the desk's (history, webhook, ARF), --tell the
    customer's ({{message}}; {{reason}} is the same, so an old template
    leaks nothing). release notifies the customer and fires "released";
    --no-notify spares the customer's mail only."""
    tmpl = tmp_path / "blocked.txt"
    tmpl.write_text("Subject: Blocked: {{logins}}\n\n"
                    "Logins: {{logins}}\nWhy: {{reason}}|{{message}}\n"
                    "Seen: {{seen}}\nAt: {{time}}\n")
    rel = tmp_path / "released.txt"
    rel.write_text("Subject: Free again: {{logins}}\n\n"
                   "Released {{logins}} at {{time}}: {{message}}.\n")
    os.chmod(tmp_path, 0o755)
    hook = Webhook()
    try:
        daemon = cpd(
            customer_map="%s cust-9 contact=owner.sam@home.example\n" %
            login("sam"),
            extra={"notify": notify_section(
                pf, "desk-sam@isp.example", hook, "customer_template: %s\nrelease_template: %s\n" %
                (tmpl, rel))})
        r = ctl(daemon, "block", login("sam"), "--create", "--by", "desk",
                "--note", "ticket 4712 internal", "--tell",
                "Please call us on 0800 4712.")
        assert r.returncode == 0, r
        cust = pf.wait_delivered("owner.sam@home.example", 1)
        assert len(cust) == 1, "no customer mail" + context(pf, daemon)
        text = body_of(parse(cust[0]))
        assert "Why: Please call us on 0800 4712.|Please call us on " \
               "0800 4712.\n" in text, text
        assert "Logins: %s\n" % login("sam") in text
        assert "ticket 4712" not in cust[0], cust[0]
        arf = pf.wait_delivered("desk-sam@isp.example", 1)
        assert len(arf) == 1 and "ticket 4712 internal" in arf[0], \
            arf + [context(pf, daemon)]
        assert wait_for(lambda: len(hook.posts) >= 1), hook.posts
        ev = json.loads(hook.posts[0][2])
        assert ev["event"] == "incident" and ev["state"] == "MANUAL_HOLD"
        assert ev["reason"] == "ticket 4712 internal", ev
        assert ev["message"] == "Please call us on 0800 4712.", ev
        assert ev["logins"] == [login("sam")], ev
        hist = daemon.ctl("history", login("sam"))["history"]
        assert "ticket 4712 internal" in hist[0]["reason"], hist

        # the release: a notice to the customer and a "released" event
        r = ctl(daemon, "release", login("sam"), "--by", "desk",
                "--note", "cleaned up, ticket 4712", "--tell",
                "Thank you for cleaning up")
        assert r.returncode == 0 and "PROBATION" in r.stdout, r
        freed = pf.wait_delivered("Free again:", 1)
        assert len(freed) == 1, "no release notice" + context(pf, daemon)
        assert "Released %s at " % login("sam") in freed[0]
        assert ": Thank you for cleaning up." in freed[0]
        assert "ticket 4712" not in freed[0]
        assert wait_for(lambda: len(hook.posts) >= 2), hook.posts
        ev = json.loads(hook.posts[1][2])
        assert ev["event"] == "released" and ev["state"] == "PROBATION", ev
        assert ev["previous_state"] == "MANUAL_HOLD"
        assert ev["reason"] == "cleaned up, ticket 4712"
        # no ARF report for a release
        time.sleep(1)
        assert len(pf.delivered_with("desk-sam@isp.example")) == 1

        # --no-notify: the webhook and the desk's report go, the
        # customer hears nothing, of the block or of the release
        r = ctl(daemon, "block", login("sam"), "--by", "desk", "--note",
                "investigating", "--no-notify")
        assert r.returncode == 0, r
        r = ctl(daemon, "release", login("sam"), "--by", "desk", "--note",
                "nothing found", "--no-notify")
        assert r.returncode == 0, r
        assert wait_for(lambda: len(hook.posts) >= 4), hook.posts
        events = [json.loads(p[2])["event"] for p in hook.posts[2:]]
        assert events == ["incident", "released"], events
        # each body as its schema says (doc/schema/webhook.json)
        from test_json_schema import validate
        for i, p in enumerate(hook.posts):
            assert validate(p[2].decode(), "webhook POST %d" % i) == \
                "chokepoint.webhook/1"
        assert len(pf.wait_delivered("desk-sam@isp.example", 2)) == 2
        time.sleep(1.5)
        assert len(pf.delivered_with("owner.sam@home.example")) == 2
        assert "customer not notified (desk (uid %d) chose --no-notify)" % \
            os.getuid() in daemon.read_log()
        # --tell with --no-notify is a contradiction
        r = ctl(daemon, "block", login("sam"), "--note", "x", "--tell", "y",
                "--no-notify")
        assert r.returncode == 2 and "--no-notify sends none" in r.stderr, r
    finally:
        hook.close()


class SignedWebhook(Webhook):
    """A receiver that checks X-Chokepoint-Signature as a ticket system
    would: HMAC-SHA256 over "TIMESTAMP.BODY" with the shared key, compared
    in constant time, the timestamp at most 5 minutes old."""

    def __init__(self, key):
        super().__init__()
        self.key = key

    def verdict(self, i):
        _, headers, body = self.posts[i]
        ts = headers.get("X-Chokepoint-Timestamp")
        sig = headers.get("X-Chokepoint-Signature", "")
        if ts is None or not sig.startswith("sha256="):
            return "unsigned"
        if abs(time.time() - int(ts)) > 300:
            return "stale"
        want = hmac.new(self.key, ts.encode() + b"." + body,
                        hashlib.sha256).hexdigest()
        return "ok" if hmac.compare_digest(want, sig[7:]) else "bad"


def test_webhook_is_signed(pf, cpd, tmp_path):
    """notify.webhook_secret_file: every POST carries a timestamp and an
    HMAC-SHA256 signature of "timestamp.body" that a receiver holding the
    key verifies; a receiver with another key does not."""
    key = b"0123456789abcdef-shared-with-the-ticket-system"
    path = tmp_path / "webhook.key"
    path.write_bytes(key + b"\n")
    os.chmod(path, 0o640)
    hook = SignedWebhook(key)
    try:
        daemon = cpd(extra={"notify": notify_section(
            pf, "desk-tom@isp.example", hook, "webhook_secret_file: %s\n" % path)})
        r = ctl(daemon, "block", login("tom"), "--create", "--note", "t")
        assert r.returncode == 0, r
        assert wait_for(lambda: len(hook.posts) >= 1), hook.posts
        assert hook.verdict(0) == "ok", hook.posts[0]
        assert json.loads(hook.posts[0][2])["event"] == "incident"
        hook.key = b"another-key-entirely-0000"
        assert hook.verdict(0) == "bad"
    finally:
        hook.close()


def config_error(tmp_path, notify):
    d = Daemon(tmp_path, classes=DETECTION_CLASSES +
               "notify:\n" + "".join("  %s\n" % l for l in
                                     notify.strip().splitlines()))
    r = subprocess.run([os.path.join(os.path.dirname(CHOKEPOINT),
                                     "chokepointd"), "-c", d.config,
                        "--check"], capture_output=True, text=True)
    return r, d.config


def test_webhook_secret_refused_when_unsafe(tmp_path):
    """A key file every user may read, a short key, or both kinds of key:
    refused at load with file:line:column and the key's name."""
    path = tmp_path / "open.key"
    path.write_text("0123456789abcdef0123\n")
    os.chmod(path, 0o644)
    base = "from: a@isp.example\nwebhook: http://127.0.0.1:9/\n"
    r, cfg = config_error(tmp_path / "a", base +
                          "webhook_secret_file: %s\n" % path)
    assert r.returncode != 0, r
    assert "notify.webhook_secret_file: %s: readable or writable by every " \
           "user" % path in r.stderr, r.stderr
    assert cfg + ":" in r.stderr, r.stderr
    r, _ = config_error(tmp_path / "b", base + "webhook_secret: short\n")
    assert r.returncode != 0 and "notify.webhook_secret: the secret is 5 " \
        "bytes; at least 16" in r.stderr, r.stderr
    os.chmod(path, 0o600)
    r, _ = config_error(tmp_path / "c", base + "webhook_secret: %s\n"
                        "webhook_secret_file: %s\n" % ("k" * 20, path))
    assert r.returncode != 0 and "not both" in r.stderr, r.stderr


def feedback_fields(part):
    """The fields of a message/feedback-report part, as (name, value)."""
    payload = part.get_payload()
    if isinstance(payload, list):  # parsed as an embedded header block
        return [(k, str(v)) for k, v in payload[0].items()]
    return [tuple(s.strip() for s in l.split(":", 1))
            for l in payload.splitlines() if ":" in l]


def test_arf_report_parses_as_rfc5965(pf, cpd):
    """The abuse desk's report, parsed by Python's email package: a
    multipart/report; report-type=feedback-report of text/plain,
    message/feedback-report and text/rfc822-headers; the required fields
    once each; Source-IP the submitting client; Reported-Domain the
    login's domain, never the forged sender's."""
    daemon = cpd(extra={"notify": notify_section(pf,
                                                 "desk-ulla@isp.example")})
    zombie_until_blocked(pf, daemon, "ulla")
    got = pf.wait_delivered("desk-ulla@isp.example", 1)
    assert len(got) == 1, "no ARF report" + context(pf, daemon)
    msg = parse(got[0])
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "feedback-report"
    assert msg["To"] == "desk-ulla@isp.example"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/feedback-report", "text/rfc822-headers"]
    fields = feedback_fields(parts[1])
    names = [k.lower() for k, _ in fields]
    for once in ("feedback-type", "user-agent", "version", "arrival-date",
                 "reporting-mta", "source-ip", "original-mail-from"):
        assert names.count(once) == 1, (once, fields)
    f = {k.lower(): v for k, v in fields}
    assert f["feedback-type"] == "abuse"
    assert f["version"] == "1"
    assert f["user-agent"].startswith("chokepoint/")
    assert f["reporting-mta"] == "dns; smtp.isp.example"
    assert f["source-ip"] == "127.0.0.1"
    assert "@forged" in f["original-mail-from"], f
    email.utils.parsedate_to_datetime(f["arrival-date"])  # a valid date
    reported = [v for k, v in fields if k.lower() == "reported-domain"]
    assert reported == [pfmod.REALM], fields
    assert not any("forged" in v for v in reported)
    # the desk's report has the scores the customer's mail does not
    assert "forged_sender" in parts[0].get_content()


def hook_events(hook, n):
    assert wait_for(lambda: len(hook.posts) >= n), hook.posts
    return [json.loads(p[2]) for p in hook.posts]


def test_release_refers_to_its_block_told_only_if_told_of_it(pf, cpd):
    """The abuse desk's review: a release is announced to the customer
    only if they were told of the block it ends (not after --no-notify;
    the store says so, across a restart); its notice and its webhook event
    quote the block's incident number, the event also its own ("change");
    the webhook and the ARF report name who decided (not the customer's
    mail); after `allow` the customer is not threatened with automatic
    blocks; an ARF report of a hold without traffic does not pretend to
    hold an envelope."""
    owner = "owner.vera@home.example"
    me = "jane.doe (uid %d)" % os.getuid()
    hook = Webhook()
    try:
        daemon = cpd(
            customer_map="%s cust-51 contact=%s\n" % (login("vera"), owner),
            extra={"notify": notify_section(pf, "desk-vera@isp.example",
                                            hook)})
        # a quiet block, then release: the customer hears nothing
        b1 = daemon.ctl("block", login("vera"), "--create", "--by",
                        "jane.doe", "--note", "quiet investigation",
                        "--no-notify")["incident"]
        r1 = daemon.ctl("release", login("vera"), "--by", "jane.doe",
                        "--note", "cleared")["incident"]
        ev = hook_events(hook, 2)
        assert [e["event"] for e in ev] == ["incident", "released"], ev
        time.sleep(1.5)
        assert pf.delivered_with(owner) == [], pf.delivered_with(owner)
        assert (ev[0]["incident"], ev[0]["change"]) == (b1, b1), ev[0]
        assert (ev[1]["incident"], ev[1]["change"]) == (b1, r1), ev[1]
        assert ev[0]["actor"] == me and ev[1]["actor"] == me, ev
        # ... nor of a quiet block ended by `allow`
        b2 = daemon.ctl("block", login("vera"), "--note", "again",
                        "--no-notify")["incident"]
        a2 = daemon.ctl("allow", login("vera"), "--note", "ok")["incident"]
        ev = hook_events(hook, 4)
        assert (ev[3]["event"], ev[3]["state"]) == ("released", "ALLOWED")
        time.sleep(1.5)
        assert pf.delivered_with(owner) == [], pf.delivered_with(owner)
        assert (ev[3]["incident"], ev[3]["change"]) == (b2, a2), ev[3]
        assert "no release notice: the customer was not told of the block " \
               "(incident %d)" % b2 in daemon.read_log()
        # the desk's reports of both holds: who decided, and no envelope
        arf = pf.wait_delivered("desk-vera@isp.example", 2)
        assert len(arf) == 2, arf
        parts = list(parse(arf[0]).iter_parts())
        assert "Decided by:     %s\n" % me in parts[0].get_content()
        assert "reconstructed from the SMTP envelope" not in arf[0]
        assert "no SMTP envelope was seen" in parts[2].as_string(), arf[0]

        # a block the customer is told of ...
        b3 = daemon.ctl("block", login("vera"), "--by", "jane.doe",
                        "--note", "complaint")["incident"]
        told = pf.wait_delivered(owner, 1)
        assert len(told) == 1, "no customer mail" + context(pf, daemon)
        assert "jane.doe" not in told[0]
        # ... is still known to be told of after a restart
        assert daemon.stop() == 0
        daemon.start()
        a3 = daemon.ctl("allow", login("vera"), "--by", "jane.doe",
                        "--note", "vouched for")["incident"]
        freed = pf.wait_delivered("can flow again", 1)
        assert len(freed) == 1, "no release notice" + context(pf, daemon)
        msg = parse(freed[0])
        text = body_of(msg)
        assert msg["To"] == owner
        assert msg["X-Chokepoint-Incident"] == str(b3), msg
        assert "(incident %d)" % b3 in msg["Subject"], msg["Subject"]
        assert "incident number %d " % b3 in text, text
        assert "incident number %d " % a3 not in text, text
        assert "watched more closely" not in text, text
        assert "blocked again" not in text, text
        assert "jane.doe" not in freed[0]
        ev = hook_events(hook, 6)
        assert (ev[5]["event"], ev[5]["incident"], ev[5]["change"],
                ev[5]["actor"]) == ("released", b3, a3, me), ev[5]
        from test_json_schema import validate
        for i, p in enumerate(hook.posts):
            assert validate(p[2].decode(), "webhook POST %d" % i) == \
                "chokepoint.webhook/1"
        # only the one block notice and the one release notice
        time.sleep(1.5)
        assert len(pf.delivered_with(owner)) == 2, \
            pf.delivered_with(owner)
    finally:
        hook.close()
