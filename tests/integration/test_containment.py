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
from cpd import CHOKEPOINT, Daemon
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
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]

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


def wait_for(pred, timeout=20.0, step=0.2):
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
    for i in range(6):
        r = send(pf, "ivan", marker(), sender=login("ivan"),
                 to=["u%d.%d@%s" % (i, k, pfmod.BOUNCE_DOMAIN)
                     for k in range(3)])
        assert r.accepted, r
        assert send(pf, "kim", marker(), sender=login("kim"),
                    to="friend@example.com").accepted

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
    assert st["delivery"]["outcomes"] >= 18, st
