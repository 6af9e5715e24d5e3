"""Compromise detection over the raw policy protocol (fast, no Postfix):
the ranking in `chokepoint top`, the evidence in the decision log, and
detection in shadow mode. The real-Postfix detection tests are in
test_postfix.py."""
import subprocess

from cpd import CHOKEPOINT, Daemon, PolicyClient, rcpt_request

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


def zombie_traffic(c, user, n):
    out = []
    for i in range(n):
        out += message(c, user, "x%d@forged%d.example" % (i, i),
                       ["v%d.%d@free%d.example" % (i, r, r) for r in range(6)],
                       "z%s%d" % (user, i))
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
                              capture_output=True, text=True, timeout=10)
        assert text.returncode == 0
        assert text.stdout.splitlines()[1].split()[0] == "BLOCKED"
        changes = [x for x in d.decisions_list() if x.get("previous_state")]
        assert [x["state"] for x in changes][-1] == "BLOCKED"
        assert "forged_sender" in changes[-1]["signals"] or \
            "new_recipient" in changes[-1]["signals"]
        assert "NORMAL -> " in d.read_log() or "-> BLOCKED" in d.read_log()
    finally:
        assert d.stop() == 0


def test_detection_shadow_answers_dunno_but_records(tmp_path):
    d = Daemon(tmp_path, classes=CLASSES,
               extra={"daemon": "log_level: info"})
    with open(d.config, "a") as f:
        f.write("detection:\n  shadow: true\n")
    d.start()
    try:
        c = PolicyClient(d.policy_sock)
        replies = zombie_traffic(c, "zed@isp.example", 16)
        assert all(r.strip() == "action=DUNNO" for r in replies), replies
        acct = d.ctl("show", "zed@isp.example")
        assert acct["state"] == "BLOCKED"
        would = [x for x in d.decisions_list() if x["shadow"]]
        assert would and would[-1]["verdict"] == "REJECT"
    finally:
        assert d.stop() == 0
