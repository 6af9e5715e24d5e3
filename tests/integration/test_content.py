"""Content fingerprints on a real Postfix (smtpd_milters -> chokepointd's
milter) and with miltertest: the same spam text from several logins,
bouncing at the next hop (smtp-sink refusing recipients with 550 5.1.1,
read back from the mail log), becomes a campaign: the next copy is
refused at end of DATA with 451 4.7.1 whoever sends it, and the senders
get `campaign` evidence. A text that many logins send but nobody refuses
(a chain letter among friends) is left alone. Protocol errors from the MTA
side close the session and are logged; nothing crashes."""
import re
import socket
import struct
import subprocess

import pytest

import postfix as pfmod
from cpd import HANG, Daemon
from test_containment import wait_for
from test_postfix import (DETECTION_CLASSES, content_section, context, cpd,
                          login, show)

USERS = ["sp1", "sp2", "sp3", "sp4", "cl1", "cl2", "cl3", "cl4", "ham"]

SPAM = ("Dear customer, your parcel could not be delivered today because "
        "the address on it was incomplete. Please confirm your details at "
        "the link below within 48 hours, or the parcel goes back to the "
        "sender and a fee of 2.99 applies. Reference number {n}. "
        "http://parcel-confirm.example/track Thank you for choosing us.")
CHAIN = ("Forward this to ten friends within the hour and good luck will "
         "come to you: a story about a dog who waited at the station every "
         "evening for his owner, for nine years, until the very end, and "
         "the town that built him a statue. Pass it on, do not break the "
         "chain, everyone who did got a surprise within a week.")

CONTENT = """
campaign_accounts: 2
refuse_accounts: 3
repeat: 2
min_bad: 3
bad_share: 0.2
"""


@pytest.fixture(scope="module")
def pf():
    yield from pfmod.running(USERS)


def bounced(pf, n):
    return len(re.findall(r"status=bounced", pf.maillog())) >= n


def test_campaign_refused_at_end_of_data_chain_letter_passes(pf, cpd):
    daemon = cpd(DETECTION_CLASSES + "delivery:\n  log: %s\n  poll: 200ms\n" %
                 pf.maillog_path, content=CONTENT)
    base = len(re.findall(r"status=bounced", pf.maillog()))

    def spam(user, i, to=None):
        return pf.swaks(to or "victim%d.%s@%s" % (i, user, pfmod.BOUNCE_DOMAIN),
                        user=login(user), body=SPAM.format(n="%s-%d" % (user, i)))

    # three logins send the spam text to a harvested list: every
    # recipient bounces at the next hop (5.1.1, read from the mail log)
    for u in ("sp1", "sp2", "sp3"):
        r = spam(u, 0)
        assert r.accepted, "%r%s" % (r, context(pf, daemon))
    pf.flush()
    assert wait_for(lambda: bounced(pf, base + 3)), context(pf, daemon)
    assert wait_for(lambda: "bad_recipient" in
                    show(daemon, login("sp3"))["evidence"]), \
        context(pf, daemon)
    # the text is spam now, but an account counts only from its second
    # copy (repeat: 2): sp1 and sp2 are two accounts, below refuse (3);
    # two are a campaign (campaign_accounts: 2): sp2 gets the evidence
    for u in ("sp1", "sp2"):
        r = spam(u, 1)
        assert r.accepted, "%r%s" % (r, context(pf, daemon))
    out = show(daemon, login("sp2"))["evidence"]
    assert "campaign" in out, out
    # sp3's second copy makes three: refused at end of DATA
    r = spam("sp3", 1)
    assert not r.accepted, "%r%s" % (r, context(pf, daemon))
    # the next copy is refused at end of DATA, from any login
    r = pf.swaks("friend@example.com", user=login("sp4"),
                 body=SPAM.format(n="sp4-0"))
    assert not r.accepted, "%r%s" % (r, context(pf, daemon))
    lines = "\n".join(l for l in r.out.splitlines() if l.startswith("<**"))
    assert "451 4.7.1" in lines and "spam run" in lines, lines
    # and the campaign's senders stay refused
    r = pf.swaks("victim9@%s" % pfmod.BOUNCE_DOMAIN, user=login("sp1"),
                 body=SPAM.format(n="sp1-9"))
    assert not r.accepted
    # a chain letter: four logins, twice each, to friends who exist
    for i in range(2):
        for u in ("cl1", "cl2", "cl3", "cl4"):
            r = pf.swaks("pal%d.%s@example.com" % (i, u), user=login(u),
                         body=CHAIN)
            assert r.accepted, "%r%s" % (r, context(pf, daemon))
    # other mail is untouched
    r = pf.swaks("mum@example.com", user=login("ham"),
                 body="Hi mum, see you on Sunday. " + CHAIN[:40])
    assert r.accepted, "%r%s" % (r, context(pf, daemon))
    assert "campaign" not in show(daemon, login("cl4"))["evidence"]
    # what was seen, in the status and the decision log
    st = daemon.ctl("status")["content"]
    assert st["fingerprinted"] >= 16 and st["campaign"] >= 2, st
    assert st["refused"] >= 3, st
    refused = [d for d in daemon.decisions_list()
               if d.get("stage") == "CONTENT" and d["action"] != "DUNNO"]
    assert refused and "spam run" in refused[0]["text"], refused
    assert refused[0]["text_accounts"] >= 3


# the queue id comes with the MAIL macros only (Sendmail's default): it
# must survive MAIL itself
MT_SCRIPT = """
conn = mt.connect("unix:" .. sock)
assert(conn, "could not open connection")
assert(mt.conninfo(conn, "pc7.example", "192.0.2.7") == nil)
assert(mt.getreply(conn) == SMFIR_CONTINUE)
for i = 1, 2 do
  assert(mt.macro(conn, string.byte("M"), "{auth_authen}", "mt@isp.example",
                  "i", "MT" .. i) == nil)
  assert(mt.mailfrom(conn, "<mt@isp.example>") == nil)
  assert(mt.getreply(conn) == SMFIR_CONTINUE)
  assert(mt.bodystring(conn, body) == nil)
  assert(mt.getreply(conn) == SMFIR_CONTINUE)
  assert(mt.eom(conn) == nil)
  assert(mt.getreply(conn) == SMFIR_CONTINUE)
end
assert(mt.disconnect(conn) == nil)
"""


def test_miltertest_session_and_bad_input(tmp_path):
    """miltertest speaks the MTA side: a whole session answered CONTINUE.
    Then garbage: a bad length and an unknown command each close their
    connection with a logged warning; the daemon keeps serving."""
    sock = str(tmp_path / "milter.sock")
    daemon = Daemon(tmp_path, extra={}, classes=DETECTION_CLASSES +
                    content_section(sock, CONTENT))
    daemon.start()
    try:
        script = tmp_path / "session.lua"
        script.write_text(MT_SCRIPT)
        r = subprocess.run(["miltertest", "-D", "sock=" + sock, "-D",
                            "body=" + SPAM.format(n=1), "-s", str(script)],
                           capture_output=True, text=True, timeout=HANG)
        assert r.returncode == 0, r.stdout + r.stderr + daemon.read_log()
        optneg = struct.pack(">IcIII", 13, b"O", 6, 0x1ff, 0x1fffff)
        for junk in (b"\xff\xff\xff\xffO",               # length 4 GiB
                     b"\x00\x00\x00\x03C\x00\x00",      # before OPTNEG
                     optneg + b"\x00\x00\x00\x01Z",       # unknown command
                     optneg + b"\x00\x00\x00\x02C\x00",  # truncated CONNECT
                     optneg + b"\x00\x10\x00\x00B"):     # 1 MiB announced
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(HANG)
            s.connect(sock)
            s.sendall(junk)
            got = b""
            while True:  # the OPTNEG reply, if any, then EOF
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
            assert len(got) in (0, 17), got
            s.close()
        # a body and an end of message without MAIL: answered, ignored
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(HANG)
        s.connect(sock)
        body = SPAM.format(n=0).encode()
        s.sendall(optneg + struct.pack(">Ic", len(body) + 1, b"B") + body +
                  struct.pack(">Ic", 1, b"E"))
        got = b""
        while len(got) < 17 + 5 + 5:
            chunk = s.recv(100)
            assert chunk, got
            got += chunk
        assert got[17:] == b"\x00\x00\x00\x01c" * 2, got
        s.close()
        log = daemon.read_log()
        assert "bad packet length" in log, log
        assert "before option negotiation" in log, log
        assert "unknown command 'Z'" in log, log
        assert "malformed SMFIC_CONNECT" in log, log
        # still serving
        r = subprocess.run(["miltertest", "-D", "sock=" + sock, "-D",
                            "body=" + CHAIN, "-s", str(script)],
                           capture_output=True, text=True, timeout=HANG)
        assert r.returncode == 0, r.stdout + r.stderr
        assert daemon.alive()
    finally:
        daemon.stop()
