"""DNSBL evidence against a real rbldnsd on loopback: a client address on
the infected-host list counts against the account (once an hour), a
PBL-type answer (dynamic range, listed in dnsbl.ignore) and an unlisted
address do not, and the decision is never delayed by the look-up."""
import os
import shutil
import socket
import subprocess
import time

import pytest

from cpd import HANG, Daemon, PolicyClient, rcpt_request
from test_detection import CLASSES


ZONE6 = """\
:127.0.0.2:Listed in the test XBL: infected host
2001:db8::/64
"""

ZONE = """\
:127.0.0.2:Listed in the test XBL: infected host
192.0.2.55
198.51.100.0/24 :127.0.0.10:dynamic range (PBL-type), should use the smarthost
"""


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def rbldnsd(tmp_path):
    if shutil.which("rbldnsd") is None:
        pytest.skip("rbldnsd is not installed")
    zdir = tmp_path / "zones"
    zdir.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(zdir, 0o755)
    (zdir / "xbl.zone").write_text(ZONE)
    (zdir / "xbl6.zone").write_text(ZONE6)
    for z in ("xbl.zone", "xbl6.zone"):
        os.chmod(zdir / z, 0o644)
    port = free_udp_port()
    log = open(tmp_path / "rbldnsd.log", "wb")
    p = subprocess.Popen(["rbldnsd", "-n", "-b", "127.0.0.1/%d" % port,
                          "-r", str(zdir), "xbl.test:ip4set:xbl.zone",
                          "xbl.test:ip6trie:xbl6.zone"],
                         stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + HANG
    while b"started" not in (tmp_path / "rbldnsd.log").read_bytes():
        assert p.poll() is None and time.time() < deadline, \
            (tmp_path / "rbldnsd.log").read_text()
        time.sleep(0.05)
    try:
        yield port
    finally:
        p.terminate()
        p.wait(5)
        log.close()


def evidence(d, key):
    return d.ctl("show", key)["evidence"]


def test_listed_client_address_is_evidence(tmp_path, rbldnsd):
    d = Daemon(tmp_path / "d", classes=CLASSES + (
        "dnsbl:\n  zones: xbl.test\n  ignore: 127.0.0.10, 127.0.0.11\n"
        "  servers: 127.0.0.1:%d\n  timeout: 30s\n" % rbldnsd),
        extra={"daemon": "log_level: info"}).start()
    try:
        c = PolicyClient(d.policy_sock)
        cases = {"bot@isp.example": "192.0.2.55",      # XBL
                 "dyn@isp.example": "198.51.100.5",    # PBL-type: ignored
                 "ok@isp.example": "203.0.113.9",      # not listed
                 "v6@isp.example": "2001:db8::7",      # XBL, IPv6
                 "lan@isp.example": "10.1.2.3"}        # private: not asked
        t0 = time.monotonic()
        for i, (user, ip) in enumerate(cases.items()):
            r = c.ask(rcpt_request(user=user, sender=user, client=ip,
                                   recipient="friend@example.com",
                                   instance="m%d" % i))
            assert "action=DUNNO" in r
        assert time.monotonic() - t0 < 1.0  # replies never wait for DNS

        def charged():
            return d.ctl("status")["dnsbl"]["charged"] >= 2
        deadline = time.time() + HANG
        while not charged() and time.time() < deadline:
            time.sleep(0.1)
        st = d.ctl("status")["dnsbl"]
        assert st["charged"] == 2 and st["listed"] == 2, st
        assert st["queries"] == 4, st  # the private address is not asked
        assert "dnsbl" in evidence(d, "bot@isp.example")
        assert "dnsbl" in evidence(d, "v6@isp.example")
        for user in ("dyn@isp.example", "ok@isp.example", "lan@isp.example"):
            assert "dnsbl" not in evidence(d, user), user
        # a second message from the listed address: cached, and the signal
        # counts once an hour only
        r = c.ask(rcpt_request(user="bot@isp.example", sender="bot@isp.example",
                               client="192.0.2.55", recipient="x@example.com",
                               instance="again"))
        st2 = d.ctl("status")["dnsbl"]
        assert st2["queries"] == 4 and st2["charged"] == 2, st2
        assert "listed in xbl.test" in d.read_log()
    finally:
        assert d.stop() == 0
