"""Protocol abuse against a real chokepointd (policy delegation protocol).

Each test starts its own chokepointd (tests/integration/cpd.py) with small
protocol limits, abuses one connection (oversize lines, too many attributes,
binary garbage, byte-by-byte and pipelined requests, idle and half-finished
requests, connection floods, reply injection) and checks what a client sees:
the reply bytes, EOF on the abused connection, the log line naming the limit.
After every abuse a well-behaved client on a new connection and a
"bystander" connected before the abuse must still get a correct reply
quickly, and the daemon must still be running.

Run: /usr/bin/python3 -m pytest -v tests/integration/test_protocol.py
"""
import json
import os
import random
import re
import resource
import select
import signal
import socket
import time
import subprocess

import pytest

from cpd import (CHOKEPOINT, CHOKEPOINTD, HANG, Daemon, PolicyClient,
                 policy_request, rcpt_request, wait_for)
from postfix import free_port

MAX_LINE = 512
MAX_ATTRS = 20
MAX_REQUEST = 4096
IDLE = 1.0  # seconds; protocol.idle_timeout of most tests

PROTO = ("max_line: %d\nmax_attributes: %d\nmax_request: %d\n"
         "idle_timeout: 2s\nmax_connections: 2000\n"
         % (MAX_LINE, MAX_ATTRS, MAX_REQUEST))

# Every account may send 3 messages per hour: the 4th RCPT of a 4th message
# (a new instance) is deferred, so replies differ in a predictable way.
LIMIT = 3
CLASSES = """
classes:
  residential:
    limits:
      - { metric: messages, window: 1h, max: 3 }
  unauthenticated:
    limits:
      - { metric: messages, window: 1h, max: 3 }
"""

DUNNO = b"action=DUNNO\n\n"
DEFER_RE = re.compile(rb"^action=DEFER_IF_PERMIT 4\.7\.1 Sending limit reached: "
                      rb"this account may send 3 messages per hour; "
                      rb"try again in [^\r\n]+\n\n$")
ONE_REPLY_RE = re.compile(rb"^action=[^\r\n]*\n\n$")


# ---------------------------------------------------------------- helpers

_seq = [0]


def fresh(prefix="well"):
    """A login (and instance) never used before in this session."""
    _seq[0] += 1
    return "%s%d@example.net" % (prefix, _seq[0]), "%s-inst-%d" % (prefix, _seq[0])




def quiet_send(sock, data):
    """sendall that tolerates the server having closed the connection."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def read_until_eof(sock, timeout=HANG):
    """Everything the server sends until it closes; fail if it does not
    close within `timeout` seconds (a hang guard: tests that time the close
    check the seconds returned). Returns (bytes, seconds until EOF)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("server did not close the connection within "
                                 "%.1fs (got %r)" % (timeout, data[:200]))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data, time.monotonic() - t0
        except socket.timeout:
            continue
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk


def still_open(sock):
    """True if the server has neither closed nor written anything."""
    sock.setblocking(False)
    try:
        data = sock.recv(1)
    except BlockingIOError:
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False
    finally:
        sock.setblocking(True)
    return False if data == b"" else True


def log_text(d):
    """The text log, split only at LF (Daemon.read_log() uses universal
    newlines, which would turn a raw CR in a log line into a line break)."""
    with open(d.log, "rb") as f:
        return f.read().decode("utf-8", errors="backslashreplace")


def wait_log(d, pattern, timeout=HANG):
    """The first log line matching regex `pattern` (str)."""
    rx = re.compile(pattern)

    def find():
        for line in log_text(d).split("\n"):
            if rx.search(line):
                return line
        return None
    return wait_for(find, what="log line /%s/ in:\n%s" % (pattern, log_text(d)),
                    timeout=timeout)


def log_lines(d, pattern):
    rx = re.compile(pattern)
    return [l for l in log_text(d).split("\n") if rx.search(l)]


def assert_log_clean(d):
    """No raw control byte, DEL or 8-bit byte anywhere in the text log."""
    with open(d.log, "rb") as f:
        raw = f.read()
    for n, line in enumerate(raw.split(b"\n"), 1):
        bad = [b for b in line if b < 0x20 or b >= 0x7f]
        assert not bad, "log line %d has raw bytes %r: %r" % (
            n, bytes(bad), line)


def status(d):
    return d.ctl("status")


def ask_bytes(c, attrs):
    c.send(policy_request(attrs))
    return c.read_reply()


class Bystander:
    """A well-behaved connection opened before the abuse."""

    def __init__(self, addr):
        self.c = PolicyClient(addr)
        self.check()

    def check(self):
        user, inst = fresh("by")
        t0 = time.monotonic()
        r = ask_bytes(self.c, rcpt_request(user=user, instance=inst))
        assert r == DUNNO, "bystander got %r" % r
        assert time.monotonic() - t0 < 1.0, "bystander reply too slow"

    def close(self):
        self.c.close()


def assert_served(d, bystander=None, addr=None):
    """The daemon runs, and a new well-behaved client (and the bystander)
    get a correct reply in under a second: DUNNO for a new account, and a
    deferral once that account is over its limit."""
    assert d.alive(), "chokepointd died:\n" + d.read_log()[-3000:]
    t0 = time.monotonic()
    c = PolicyClient(addr or d.policy_sock)
    try:
        user, _ = fresh()
        for i in range(LIMIT):
            r = ask_bytes(c, rcpt_request(user=user, instance="%s-%d" % (user, i)))
            assert r == DUNNO, "well-behaved client got %r" % r
        r = ask_bytes(c, rcpt_request(user=user, instance=user + "-over"))
        assert DEFER_RE.match(r), "well-behaved client got %r" % r
    finally:
        c.close()
    assert time.monotonic() - t0 < 1.0, "well-behaved client served too slowly"
    if bystander is not None:
        bystander.check()
    assert d.alive()


@pytest.fixture
def start(tmp_path):
    """start(name, proto=..., classes=..., tcp_port=...) -> running Daemon.
    All are stopped at teardown, which fails if one did not exit cleanly."""
    started = []

    def _start(name="d", proto=PROTO, classes=CLASSES, tcp_port=None,
               customer_map=""):
        d = Daemon(tmp_path / name, classes=classes, customer_map=customer_map,
                   extra={"protocol": proto}, tcp_port=tcp_port)
        started.append(d)
        return d.start()
    yield _start
    bad = []
    for d in started:
        was_alive = d.alive()
        rc = d.stop()
        if not was_alive or rc != 0:
            bad.append("%s: alive=%s rc=%s\n%s" % (d.dir, was_alive, rc,
                                                   d.read_log()[-2000:]))
    if bad:
        pytest.fail("chokepointd did not shut down cleanly:\n" + "\n".join(bad))


def req_with_line_of(nbytes, user, inst):
    """A valid request one of whose lines (helo_name=...) is exactly
    `nbytes` bytes long, newline excluded."""
    a = rcpt_request(user=user, instance=inst)
    a["helo_name"] = "h" * (nbytes - len("helo_name="))
    return a


def sized_request(total, user, inst, filler_lines=9):
    """A valid request of exactly `total` bytes (final empty line included)
    made of short real attributes plus `filler_lines` long x_fill lines,
    every line within MAX_LINE."""
    head = policy_request({"request": "smtpd_access_policy",
                           "protocol_state": "RCPT",
                           "sasl_username": user, "instance": inst,
                           "client_address": "192.0.2.10",
                           "recipient": "r@example.com"})[:-1]
    room = total - len(head) - 1  # bytes for the filler lines
    lines = []
    for i in range(filler_lines):
        n = room // (filler_lines - i)  # this line, newline included
        name = "x_fill%d=" % i
        assert len(name) < n - 1 <= MAX_LINE, "filler does not fit"
        lines.append((name + "f" * (n - 1 - len(name)) + "\n").encode())
        room -= n
    data = head + b"".join(lines) + b"\n"
    assert len(data) == total
    return data


# ---------------------------------------------------------------- 1-3 limits

def test_line_of_exactly_max_line_accepted_longer_closes(start):
    d = start()
    by = Bystander(d.policy_sock)

    c = PolicyClient(d.policy_sock)
    user, inst = fresh("edge")
    r = ask_bytes(c, req_with_line_of(MAX_LINE, user, inst))
    assert r == DUNNO
    # Same connection keeps working after a maximal line.
    assert ask_bytes(c, rcpt_request(user=user, instance=inst + "b")) == DUNNO
    # A trailing CR is tolerated but counts towards max_line.
    a = req_with_line_of(MAX_LINE - 1, user, inst + "c")
    data = policy_request(a).replace(b"\n", b"\r\n", 1)
    c.send(data)
    assert c.read_reply() == DUNNO
    assert d.decisions_list()[-1]["instance"] == inst + "c"
    c.close()

    # One byte more: closed, nothing answered.
    c = PolicyClient(d.policy_sock)
    quiet_send(c.s, policy_request(req_with_line_of(MAX_LINE + 1, user, inst + "d")))
    data, _ = read_until_eof(c.s)
    assert data == b""
    line = wait_log(d, r"warning: .*closing: line longer than protocol\.max_line")
    assert 'near "' in line
    # The excerpt is truncated, not the whole 513-byte line.
    assert len(line) < 300, line

    # max_line + CR: also too long.
    c = PolicyClient(d.policy_sock)
    data = policy_request(req_with_line_of(MAX_LINE, user, inst + "e"))
    quiet_send(c.s, data.replace(b"h\n", b"h\r\n", 1))
    assert read_until_eof(c.s)[0] == b""
    assert len(log_lines(d, r"closing: line longer than protocol\.max_line")) == 2

    # A single endless line with no newline at all is cut off too.
    c = PolicyClient(d.policy_sock)
    quiet_send(c.s, b"sasl_username=" + b"A" * 100000)
    assert read_until_eof(c.s)[0] == b""
    assert len(log_lines(d, r"closing: line longer than protocol\.max_line")) == 3

    assert status(d)["protocol_errors"] == 3
    assert_served(d, by)


def test_too_many_attributes_closes(start):
    d = start()
    by = Bystander(d.policy_sock)
    user, inst = fresh("attrs")

    a = rcpt_request(user=user, instance=inst)
    for i in range(MAX_ATTRS - len(a)):
        a["x_extra%d" % i] = "1"
    assert len(a) == MAX_ATTRS
    c = PolicyClient(d.policy_sock)
    assert ask_bytes(c, a) == DUNNO  # exactly max_attributes: fine
    a["x_one_more"] = "1"
    a["instance"] = inst + "b"
    quiet_send(c.s, policy_request(a))
    assert read_until_eof(c.s)[0] == b""
    line = wait_log(d, r"warning: .*closing: more attributes than "
                       r"protocol\.max_attributes \(after 1 requests\)")
    assert "x_one_more" in line, line  # the excerpt is the offending line

    # Thousands of tiny lines are cut off at max_attributes as well.
    c = PolicyClient(d.policy_sock)
    quiet_send(c.s, b"a=b\n" * 5000)
    assert read_until_eof(c.s)[0] == b""
    assert len(log_lines(d, r"more attributes than protocol\.max_attributes")) == 2
    assert_served(d, by)


def test_request_larger_than_max_request_closes(start):
    d = start()
    by = Bystander(d.policy_sock)
    user, inst = fresh("big")

    c = PolicyClient(d.policy_sock)
    c.send(sized_request(MAX_REQUEST, user, inst))  # exactly the limit
    assert c.read_reply() == DUNNO
    assert d.decisions_list()[-1]["instance"] == inst

    quiet_send(c.s, sized_request(MAX_REQUEST + 1, user, inst + "b"))
    assert read_until_eof(c.s)[0] == b""
    wait_log(d, r"warning: .*closing: request larger than "
                r"protocol\.max_request \(after 1 requests\)")
    assert not [x for x in d.decisions_list() if x["instance"] == inst + "b"]

    # Far beyond: many lines, each under max_line, never an empty line.
    c = PolicyClient(d.policy_sock)
    quiet_send(c.s, b"".join(b"x_%d=%s\n" % (i, b"v" * 400) for i in range(15)))
    assert read_until_eof(c.s)[0] == b""
    assert len(log_lines(d, r"request larger than protocol\.max_request")) == 2
    assert_served(d, by)


# ---------------------------------------------------------------- 4 garbage

def test_binary_garbage_closes_and_log_is_escaped(start):
    d = start()
    by = Bystander(d.policy_sock)
    rng = random.Random(4)
    # Bytes without '=' and newline, with NUL, 0xff, ESC, CR and DEL in the
    # first 32 (the logged excerpt), then a newline: not name=value.
    alphabet = [b for b in range(256) if b not in (ord("="), ord("\n"))]
    junk = bytes([0, 0xff, 0x1b, 0x0d, 0x7f, 0x07, 0x80]) + \
        bytes(rng.choice(alphabet) for _ in range(300)) + b"\n"
    c = PolicyClient(d.policy_sock)
    quiet_send(c.s, junk)
    assert read_until_eof(c.s)[0] == b""
    line = wait_log(d, r"warning: .*closing: line is not name=value "
                       r"\(after 0 requests\)")
    assert r'near "\x00\xff\x1b\x0d\x7f\x07\x80' in line, line
    assert line.rstrip().endswith('..."'), line  # truncated excerpt

    # A line with an empty name ("=value") is not name=value either.
    c = PolicyClient(d.policy_sock)
    quiet_send(c.s, b"=smtpd_access_policy\n\n")
    assert read_until_eof(c.s)[0] == b""

    # A random binary flood (newlines included, '=' excluded) is cut off
    # by one of the limits, whichever comes first.
    for seed in range(5):
        r = random.Random(seed)
        blob = bytes(r.choice(alphabet + [10] * 8) for _ in range(20000))
        c = PolicyClient(d.policy_sock)
        quiet_send(c.s, blob)
        data, _ = read_until_eof(c.s)
        # Empty lines in the blob may complete "requests" (no request=
        # attribute, answered DUNNO) before the first bad line.
        assert re.fullmatch(rb"(action=DUNNO\n\n)*", data), data[:200]
    wait_for(lambda: status(d)["protocol_errors"] == 7, what="7 protocol errors")
    assert_log_clean(d)
    assert_served(d, by)
    assert_log_clean(d)


# ---------------------------------------------------------------- 5 splitting

def test_request_sent_byte_by_byte(start):
    d = start()
    by = Bystander(d.policy_sock)
    user, inst = fresh("drip")
    c = PolicyClient(d.policy_sock)
    for i in range(LIMIT):
        assert ask_bytes(c, rcpt_request(user=user, instance="%s%d" % (inst, i))) == DUNNO
    # The 4th message, one byte per write, with a line of exactly max_line
    # bytes in it: the parser must put it together right (deferral, and
    # the decision shows the attributes).
    a = req_with_line_of(MAX_LINE, user, inst + "drip")
    a["recipient"] = "drip@example.org"
    for b in policy_request(a):
        c.send(bytes([b]))
        time.sleep(0.0005)
    r = c.read_reply()
    assert DEFER_RE.match(r), r
    last = d.decisions_list()[-1]
    assert (last["sasl_username"], last["instance"], last["recipient"]) == \
        (user, inst + "drip", "drip@example.org")
    assert last["action"] == "DEFER_IF_PERMIT"

    # Split in two at every position (CRLF line ends: split between CR and
    # LF too); each request answered once and decided with its attributes.
    user2, inst2 = fresh("split")
    base = policy_request(rcpt_request(user=user2, instance="INST",
                                       recipient="s@example.org"))
    base = base.replace(b"\n", b"\r\n")
    n = 0
    for cut in range(1, len(base), 3):
        n += 1
        data = base.replace(b"INST", b"%s-%04d" % (inst2.encode(), cut))
        c.send(data[:cut])
        time.sleep(0.001)
        c.send(data[cut:])
        r = c.read_reply()
        assert ONE_REPLY_RE.match(r), (cut, r)
    decided = [x for x in d.decisions_list() if x["sasl_username"] == user2]
    assert len(decided) == n
    assert all(x["recipient"] == "s@example.org" for x in decided)
    assert [x["instance"] for x in decided] == sorted(x["instance"] for x in decided)
    assert [x["action"] for x in decided] == ["DUNNO"] * LIMIT + \
        ["DEFER_IF_PERMIT"] * (n - LIMIT)
    assert_served(d, by)


# ---------------------------------------------------------------- 6 pipelining

def test_500_pipelined_requests_answered_in_order(start):
    d = start()
    by = Bystander(d.policy_sock)
    rng = random.Random(6)
    users = [fresh("pipe")[0] for _ in range(8)]
    sent = {u: 0 for u in users}
    reqs, expect = [], []
    for i in range(500):
        k = rng.random()
        if k < 0.08:  # not a policy request: DUNNO
            reqs.append({"request": "junk_%d" % i, "instance": "p%d" % i})
            expect.append(DUNNO)
            continue
        if k < 0.12:  # no identity at all: DUNNO
            a = rcpt_request(user="", client="", instance="p%d" % i)
            reqs.append(a)
            expect.append(DUNNO)
            continue
        u = rng.choice(users)
        reqs.append(rcpt_request(user=u, instance="p%d" % i,
                                 recipient="r%d@example.com" % i))
        expect.append(DUNNO if sent[u] < LIMIT else "DEFER")
        sent[u] += 1
    assert expect.count("DEFER") > 100 and expect.count(DUNNO) > 50
    payload = b"".join(policy_request(a) for a in reqs)
    assert len(payload) > 10 * 4096  # spans many reads

    c = PolicyClient(d.policy_sock)
    c.send(payload)
    got = [c.read_reply() for _ in range(500)]
    for i, (g, e) in enumerate(zip(got, expect)):
        if e == "DEFER":
            assert DEFER_RE.match(g), (i, g)
        else:
            assert g == e, (i, g)
    # Exactly 500: nothing more arrives.
    c.s.settimeout(0.3)
    with pytest.raises(socket.timeout):
        extra = c.s.recv(100)
        assert extra == b"", extra
    assert c.buf == b""
    # Decisions were taken in request order.
    insts = [x["instance"] for x in d.decisions_list() if x["instance"].startswith("p")]
    assert insts == ["p%d" % i for i, a in enumerate(reqs)
                     if a.get("request") == "smtpd_access_policy"]
    # The connection is still usable.
    assert ask_bytes(c, rcpt_request(user=fresh()[0], instance="after")) == DUNNO
    assert_served(d, by)


def test_client_that_does_not_read_replies_is_closed(start):
    d = start()
    by = Bystander(d.policy_sock)
    user, _ = fresh("hog")
    # Small requests, long (deferral) replies, never read.
    one = b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=%s\n" \
          b"instance=%%d\n\n" % user.encode()
    c = PolicyClient(d.policy_sock)
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        chunk = b"".join(one % (sent + i) for i in range(1000))
        if not quiet_send(c.s, chunk):
            break
        sent += 1000
        if sent >= 60000:
            break
    wait_log(d, r"warning: .*closing: client does not read its replies")
    data, _ = read_until_eof(c.s)
    assert data.count(b"\n\n") < sent
    assert_served(d, by)


# ---------------------------------------------------------------- 7 idle

def test_incomplete_and_idle_connections_time_out(start):
    d = start(proto=PROTO.replace("idle_timeout: 2s", "idle_timeout: 1s"))
    by = Bystander(d.policy_sock)
    user, inst = fresh("half")
    half = policy_request(rcpt_request(user=user, instance=inst))[:-40]

    partial = PolicyClient(d.policy_sock)
    idle = PolicyClient(d.policy_sock)
    t0 = time.monotonic()
    partial.send(half)
    # Meanwhile an active client (one request every 0.3 s, for longer than
    # the idle timeout) is served promptly and not timed out.
    closed = {}
    next_check = t0
    while True:
        now = time.monotonic()
        if now - t0 > 4:
            break
        if len(closed) == 2 and now - t0 > 1.6:
            break
        if now >= next_check:
            by.check()
            next_check = now + 0.3
        open_ = [c.s for c in (partial, idle) if c.s not in closed]
        for sock in select.select(open_, [], [], 0.02)[0]:
            try:
                data = sock.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b"", data
            closed[sock] = time.monotonic() - t0
    assert partial.s in closed, "incomplete request not closed after 4 s"
    assert idle.s in closed, "idle connection not closed after 4 s"
    for sock, t in closed.items():
        assert 0.9 * IDLE <= t <= IDLE + 1.0, "closed after %.2fs" % t
    line = wait_log(d, r"warning: .*closing: no complete request for protocol.idle_timeout")
    assert log_lines(d, r"debug: .*closing idle connection")
    assert len(log_lines(d, r"no complete request for protocol.idle_timeout")) == 1, line
    assert status(d)["idle_timeouts"] >= 2
    assert not [x for x in d.decisions_list() if x["instance"] == inst]
    assert_served(d, by)


def test_idle_timeout_counts_from_the_last_complete_request(start):
    """A request begun late, or trickled in, does not keep a connection:
    the idle timeout runs from the last complete request (issue 12)."""
    d = start(proto=PROTO.replace("idle_timeout: 2s", "idle_timeout: 1s"))
    user, inst = fresh("idle")
    late = PolicyClient(d.policy_sock)
    busy = PolicyClient(d.policy_sock)
    t0 = time.monotonic()
    time.sleep(0.6)
    late.send(b"request=smtpd_access_policy\n")
    busy.send(policy_request(rcpt_request(user=user, instance=inst)))
    t1 = time.monotonic()
    assert busy.s.recv(4096).startswith(b"action=")
    data, _ = read_until_eof(late.s)
    closed = time.monotonic()
    assert data == b""
    assert 0.9 * IDLE <= closed - t0 < 0.9 * IDLE + 0.6, \
        "closed %.2fs after connecting" % (closed - t0)
    # the one that completed a request at 0.6 s is still open
    assert still_open(busy.s)
    data, _ = read_until_eof(busy.s)
    assert time.monotonic() - t1 >= 0.9 * IDLE
    wait_log(d, r"closing: no complete request for protocol.idle_timeout")
    assert_served(d)


# ---------------------------------------------------------------- 8 floods

def _raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return soft


def _open_many(addr, n):
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(HANG)
        s.connect(addr)
        if i % 2:  # half of them start a request and stop
            s.sendall(b"request=smtpd_access_policy\nsasl_user")
        socks.append(s)
    return socks


def test_1000_idle_connections_do_not_starve_others(start):
    old = _raise_nofile(1400)
    socks = []
    try:
        d = start(proto=PROTO.replace("idle_timeout: 2s", "idle_timeout: 60s"))
        wait_for(lambda: status(d)["connections"] == 0, what="probe closed")
        socks = _open_many(d.policy_sock, 1000)
        wait_for(lambda: status(d)["connections"] == 1000,
                 what="1000 connections in status")
        t0 = time.monotonic()
        assert_served(d)
        assert time.monotonic() - t0 < 1.0
        by = Bystander(d.policy_sock)
        st = status(d)
        assert st["connections"] == 1001 and st["connections_refused"] == 0
        # Nobody was closed.
        assert all(still_open(s) for s in socks[::50])
        for s in socks:
            s.close()
        socks = []
        wait_for(lambda: status(d)["connections"] == 1,
                 what="connections back to 1")
        by.check()
        assert_served(d, by)
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (old, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_max_connections_refuses_extra_connections(start):
    # one caller (root) may take them all here: the per-caller share is
    # test_trust.py's
    d = start(proto=PROTO.replace("max_connections: 2000",
                                  "max_connections: 50\n"
                                  "max_connections_per_peer: 50")
              .replace("idle_timeout: 2s", "idle_timeout: 60s"))
    wait_for(lambda: status(d)["connections"] == 0, what="probe closed")
    by = Bystander(d.policy_sock)
    held = _open_many(d.policy_sock, 49)
    try:
        wait_for(lambda: status(d)["connections"] == 50, what="50 connections")
        # 30 more: accepted and closed at once.
        for i in range(30):
            t0 = time.monotonic()
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.policy_sock)
            quiet_send(s, policy_request(rcpt_request(user=fresh("x")[0])))
            data, took = read_until_eof(s)
            s.close()
            assert data == b"", data
            assert time.monotonic() - t0 < 1.0
        st = status(d)
        assert st["connections"] == 50
        assert st["connections_refused"] == 30
        # Logged once (at most every 10 s), naming the limit.
        lines = log_lines(d, r"refused \d+ connections: "
                             r"protocol\.max_connections \(50\) reached")
        assert len(lines) == 1, lines
        assert "warning" in lines[0]
        # The connections already open are untouched and served.
        assert all(still_open(s) for s in held)
        by.check()
        # Freeing slots lets new clients in again.
        for s in held[:10]:
            s.close()
        wait_for(lambda: status(d)["connections"] == 40, what="40 connections")
        assert_served(d, by)
        assert status(d)["connections_refused"] == 30
    finally:
        for s in held:
            s.close()


# ---------------------------------------------------------------- 9 injection

def test_numbers_are_strict(start):
    """size and recipient_count that are not decimal numbers in range are
    a malformed request: logged, answered with protocol.malformed (defer),
    never decided or charged as 0 (issue 12)."""
    d = start()
    c = PolicyClient(d.policy_sock)
    user, inst = fresh("num")
    bad = ["-1", "0x10", "", "99999999999999999999999", "1e9", " 5", "5 ",
           "18446744073709551615", "1099511627777"]
    for i, v in enumerate(bad):
        for field in ("size", "recipient_count"):
            for state in ("RCPT", "END-OF-MESSAGE"):
                a = rcpt_request(user=user, instance="%s-%d-%s" % (inst, i, field),
                                 state=state)
                a[field] = v
                r = ask_bytes(c, a)
                assert r == (b"action=DEFER_IF_PERMIT 4.3.0 Policy service: "
                             b"malformed request\n\n"), (field, v, r)
    assert not [x for x in d.decisions_list() if x["instance"].startswith(inst)]
    wait_log(d, r"warning: unix#\d+ uid=0 pid=\d+: size='0x10' is not a "
                r"number in range; answering DEFER_IF_PERMIT")
    wait_log(d, r"recipient_count='-1' is not a number in range")
    assert status(d)["bad_requests"] == len(bad) * 4
    # in range, and absent (an older MTA), are fine
    a = rcpt_request(user=user, instance=inst + "-ok", state="END-OF-MESSAGE")
    a["size"] = str(1 << 40)
    del a["recipient_count"]
    assert ask_bytes(c, a) == DUNNO
    assert_served(d)


def test_values_cannot_inject_reply_lines(start):
    d = start()
    by = Bystander(d.policy_sock)
    c = PolicyClient(d.policy_sock)
    evil = ["x\raction=REJECT", "action=REJECT", "a\rb",
            "x\r\raction=REJECT 5.7.1 no\r", "\x00action=REJECT", "\x1b[2J\x07",
            "4.7.1 \raction=OK\r\r"]
    for i, v in enumerate(evil):
        user, inst = fresh("inj")
        for field in ("recipient", "sender", "helo_name", "client_name",
                      "queue_id", "size", "recipient_count"):
            a = rcpt_request(user=user, instance="%s-%s" % (inst, field))
            a[field] = v
            r = ask_bytes(c, a)
            assert ONE_REPLY_RE.match(r), (v, field, r)
    # Over the limit: the reply carries text, still one line.
    user, inst = fresh("inj")
    for i in range(LIMIT + 2):
        r = ask_bytes(c, rcpt_request(user=user, instance="%s%d" % (inst, i),
                                      recipient="x\raction=REJECT",
                                      sender="\raction=REJECT\r"))
        assert (r == DUNNO) if i < LIMIT else DEFER_RE.match(r), r
    # A raw newline in a "value" starts a new attribute line: an
    # "action=REJECT" attribute is just an unknown attribute.
    user, inst = fresh("nl")
    a = rcpt_request(user=user, instance=inst)
    a["recipient"] = "x\naction=REJECT"
    r = ask_bytes(c, a)
    assert r == DUNNO
    assert d.decisions_list()[-1]["recipient"] == "x"
    # ... and "\n\n" inside a value ends the request: what follows is a
    # second request (no request= attribute: DUNNO), never reply text.
    a = rcpt_request(user=user, instance=inst + "b")
    a["recipient"] = "x\n\naction=REJECT"
    c.send(policy_request(a))
    r1, r2 = c.read_reply(), c.read_reply()
    assert (r1, r2) == (DUNNO, DUNNO)
    wait_log(d, r"request type '' is not smtpd_access_policy")
    c.s.settimeout(0.3)
    with pytest.raises(socket.timeout):
        assert c.s.recv(100) == b""
    assert c.buf == b""
    c.s.settimeout(HANG)
    # A request made only of action= lines gets DUNNO, nothing else.
    c.send(b"action=REJECT\naction=OK\n\n")
    assert c.read_reply() == DUNNO
    assert_served(d, by)


def test_decision_json_with_quotes_backslashes_controls(start):
    d = start()
    by = Bystander(d.policy_sock)
    login = 'ev"il\\\x01\x1b[31m\rFAKE: x\x7f\tq\x00z@example.net'
    c = PolicyClient(d.policy_sock)
    replies = []
    for i in range(LIMIT + 1):
        replies.append(ask_bytes(c, rcpt_request(
            user=login, instance='i"\\%d\x02' % i, recipient='r"\\\x03@x')))
    assert replies[:LIMIT] == [DUNNO] * LIMIT and DEFER_RE.match(replies[-1])
    with open(d.decisions, "rb") as f:
        raw = f.read()
    recs = [json.loads(l.decode("utf-8")) for l in raw.splitlines() if l.strip()]
    mine = [r for r in recs if r["sasl_username"] == login]
    assert len(mine) == LIMIT + 1
    assert [r["instance"] for r in mine] == ['i"\\%d\x02' % i for i in range(LIMIT + 1)]
    assert all(r["recipient"] == 'r"\\\x03@x' for r in mine)
    assert mine[-1]["action"] == "DEFER_IF_PERMIT"
    assert mine[-1]["rule"] == "messages/1h" and mine[-1]["limit"] == LIMIT
    # One record per line: raw control bytes never reach the file.
    assert not [b for b in raw if b < 0x20 and b != 0x0a]
    assert_served(d, by)


def test_text_log_escapes_hostile_login(start):
    """Every field of the text log line that comes from the peer is escaped
    (the login appears as login= and as part of key=)."""
    d = start()
    login = 'ev"il\\\x01\x1b[31m\rchokepointd: warning: FAKE\x7f'
    c = PolicyClient(d.policy_sock)
    for i in range(LIMIT + 1):
        ask_bytes(c, rcpt_request(user=login, instance="t%d" % i))
    line = wait_log(d, r"info: DEFER_IF_PERMIT: .*instance=t%d" % LIMIT)
    assert 'login=ev"il' + r"\x5c\x01\x1b[31m\x0dchokepointd: warning: FAKE\x7f" \
        in line, line
    assert_log_clean(d)
    assert_served(d)


def test_decision_json_is_valid_utf8(start):
    """The decision log must stay parseable JSON (RFC 8259: UTF-8) whatever
    bytes the peer sends: invalid UTF-8 in a value, and a valid multi-byte
    character cut by the 128-byte field truncation."""
    d = start()
    c = PolicyClient(d.policy_sock)
    long_utf8 = "a" * 127 + "\u00e9"  # 129 bytes, é straddles byte 128
    a = rcpt_request(user=fresh("utf")[0], instance="u1", recipient=long_utf8 + "@x")
    assert ask_bytes(c, a) == DUNNO
    a = rcpt_request(user="bin@example.net", instance="u2")
    c.send(policy_request(a).replace(b"sasl_username=bin",
                                     b"sasl_username=\xff\xfe\xc3bin"))
    assert c.read_reply() == DUNNO
    with open(d.decisions, "rb") as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    bad = []
    for l in lines:
        try:
            json.loads(l.decode("utf-8"))
        except ValueError as e:
            bad.append("%s: %r" % (e, l[-160:]))
    assert not bad, "decision log lines that are not valid UTF-8 JSON:\n" + \
        "\n".join(bad)
    assert_served(d)


# ---------------------------------------------------------------- 10 TCP

def test_tcp_listener_serves_and_survives_abuse(start):
    port = free_port()
    d = start(tcp_port=port)
    addr = ("127.0.0.1", port)
    by = Bystander(addr)
    assert_served(d, by, addr=addr)

    # Basic request, split at every 7th byte with TCP_NODELAY.
    c = PolicyClient(addr)
    c.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    user, inst = fresh("tcp")
    data = policy_request(rcpt_request(user=user, instance=inst))
    for i in range(0, len(data), 7):
        c.send(data[i:i + 7])
        time.sleep(0.001)
    assert c.read_reply() == DUNNO
    assert d.decisions_list()[-1]["sasl_username"] == user

    # Oversize line over TCP.
    quiet_send(c.s, b"recipient=" + b"r" * (MAX_LINE * 4) + b"\n\n")
    assert read_until_eof(c.s)[0] == b""
    line = wait_log(d, r"warning: tcp:127\.0\.0\.1:\d+ uid=0: closing: line longer than "
                       r"protocol\.max_line \(after 1 requests\)")
    assert line
    # Binary garbage over TCP.
    g = PolicyClient(addr)
    quiet_send(g.s, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)))
    assert read_until_eof(g.s)[0] == b""
    wait_log(d, r"tcp:127\.0\.0\.1:\d+ uid=0: closing: line is not name=value")
    assert_log_clean(d)
    assert_served(d, by, addr=addr)
    assert_served(d)  # the unix socket too


# ---------------------------------------------------------------- 11 odd requests

def test_unknown_request_type_and_missing_identity(start):
    d = start()
    by = Bystander(d.policy_sock)
    c = PolicyClient(d.policy_sock)

    assert ask_bytes(c, {"request": "junk", "sasl_username": "u@x"}) == DUNNO
    wait_log(d, r"warning: .*request type 'junk' is not smtpd_access_policy; "
                r"answering DUNNO")
    assert ask_bytes(c, {"sasl_username": "u@x", "instance": "noreq"}) == DUNNO
    wait_log(d, r"request type '' is not smtpd_access_policy")
    assert ask_bytes(c, {"request": "smtpd_access_policy\x1b[2J\x00"}) == DUNNO
    wait_log(d, r"request type 'smtpd_access_policy\\x1b\[2J\\x00' is not")
    long_type = "T" * 5000
    c.send(b"request=" + long_type[:MAX_LINE - 8].encode() + b"\n\n")
    assert c.read_reply() == DUNNO
    line = wait_log(d, r"request type 'TTTT")
    assert len(line) < 200, line
    # These were not decided, let alone counted.
    assert not [x for x in d.decisions_list() if x["instance"] == "noreq"]

    # No login and no client address / an invalid one / an empty login and
    # an invalid address: DUNNO, a warning, the connection stays usable.
    n0 = len(log_lines(d, r"neither sasl_username nor a valid client_address"))
    for client in ("", "not-an-ip", "999.1.1.1", "192.0.2.1\x00", "::g", "192.0.2.1/24"):
        a = rcpt_request(user="", client=client, instance="noid")
        r = ask_bytes(c, a)
        assert r == DUNNO, (client, r)
    a = rcpt_request(instance="noid")
    del a["sasl_username"], a["client_address"]
    assert ask_bytes(c, a) == DUNNO
    wait_for(lambda: len(log_lines(
        d, r"warning: .*request has neither sasl_username nor a valid "
           r"client_address; answering DUNNO")) == n0 + 7, what="7 warnings")
    # A valid address without a login is an identity (keyed by /32): it is
    # limited like any account, and logs no warning.
    for i in range(LIMIT + 1):
        r = ask_bytes(c, rcpt_request(user="", client="198.51.100.7",
                                      instance="ip%d" % i))
        assert (r == DUNNO) if i < LIMIT else DEFER_RE.match(r), r
    assert d.decisions_list()[-1]["key"] == "ip:198.51.100.7/32"
    assert len(log_lines(d, r"neither sasl_username")) == n0 + 7
    assert status(d)["protocol_errors"] == 0
    assert_served(d, by)


# ---------------------------------------------------------------- edges

def test_half_closed_client_gets_its_reply(start):
    """Exim's ${readsocket} sends the request and shuts down its write side
    before reading: the reply must still arrive."""
    d = start()
    for i in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(HANG)
        s.connect(d.policy_sock)
        s.sendall(policy_request(rcpt_request(user=fresh("exim")[0])))
        s.shutdown(socket.SHUT_WR)
        data, _ = read_until_eof(s)
        s.close()
        assert data == DUNNO, (i, data)
    assert_served(d)


def test_client_closing_mid_request_is_harmless(start):
    d = start()
    by = Bystander(d.policy_sock)
    for i in range(20):
        c = PolicyClient(d.policy_sock)
        c.send(policy_request(rcpt_request(user=fresh("mid")[0]))[:50 + i])
        c.close()
    wait_for(lambda: len(log_lines(d, r"client closed in the middle of a request")) == 20,
             what="20 warnings")
    assert_served(d, by)


def test_replies_before_a_protocol_error_are_delivered(start):
    """A client pipelines a valid request and then a bad line in the same
    write. The valid request is decided (and its message reserved), so its
    reply must reach the client before the connection is closed."""
    d = start()
    user, inst = fresh("pre")
    c = PolicyClient(d.policy_sock)
    quiet_send(c.s, policy_request(rcpt_request(user=user, instance=inst)) +
               b"this line has no equals sign\n")
    data, _ = read_until_eof(c.s)
    wait_log(d, r"closing: line is not name=value \(after 1 requests\)")
    assert [x["instance"] for x in d.decisions_list()
            if x["sasl_username"] == user] == [inst]
    assert data == DUNNO, "reply to the decided request was dropped: %r" % data
    assert_served(d)


def test_status_text_and_json_show_the_same_counters(start):
    """`chokepoint status` renders one table two ways: the text shows every
    counter of the JSON, in the same order, with the same values."""
    d = start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(d.policy_sock)
        s.sendall(policy_request(rcpt_request(user="a@isp.example")))
        s.recv(4096)
    j = d.ctl("status")
    r = subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "status"],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    want = []
    for k, v in j.items():
        if isinstance(v, dict):
            want += list(v.values())
        elif isinstance(v, int) and not isinstance(v, bool) and \
                k != "uptime_s":
            want.append(v)
    body = r.stdout.split("\n", 1)[1]
    got = [int(n) for n in re.findall(r"(?:: |, )(\d+) ", body)]
    assert got == want, (got, want, r.stdout)
    assert j["requests"] == 1 and "requests: 1 decided" in r.stdout


def test_version_and_option_errors_name_the_option():
    """--version on both binaries; a bad option or argument is named in
    the error, with exit code 2 (it was "unknown command" or bare usage)."""
    for binary, name in ((CHOKEPOINT, "chokepoint"),
                         (CHOKEPOINTD, "chokepointd")):
        r = subprocess.run([binary, "--version"], capture_output=True,
                           text=True, timeout=HANG)
        assert r.returncode == 0 and re.match(name + r" \d", r.stdout), r
    cases = [
        ([CHOKEPOINT, "--bogus", "status"], "unknown option '--bogus'"),
        ([CHOKEPOINT, "show"], "show needs an ACCOUNT"),
        ([CHOKEPOINT, "status", "x"], "status takes no argument (got 'x')"),
        ([CHOKEPOINT, "-s"], "option '-s' needs a value"),
        ([CHOKEPOINT, "block", "a", "b"], "unexpected argument 'b'"),
        ([CHOKEPOINT, "block", "a b", "--reason", "r"], "may not have spaces"),
        ([CHOKEPOINT, "frobnicate"], "unknown command 'frobnicate'"),
        ([CHOKEPOINT, "top", "abc"], "top N: N is how many accounts, 1 to "
                                     "100 (not 'abc')"),
        ([CHOKEPOINT, "top", "0"], "1 to 100 (not '0')"),
        ([CHOKEPOINT, "block", "a", "--note", "n", "--tell", "a\x01b"],
         "--tell: one line of text for the customer"),
        ([CHOKEPOINT, "top", "1000"], "1 to 100 (not '1000')"),
        ([CHOKEPOINTD, "--bogus"], "unknown option '--bogus'"),
        ([CHOKEPOINTD, "-c"], "option '-c' needs a FILE"),
        ([CHOKEPOINTD, "extra"], "unexpected argument 'extra'"),
    ]
    for args, want in cases:
        r = subprocess.run(args, capture_output=True, text=True, timeout=HANG)
        assert r.returncode == 2, (args, r)
        assert want in r.stderr.splitlines()[0], (args, r.stderr)
        # the error and a pointer to the help, not the whole help
        assert len(r.stderr.splitlines()) <= 2, (args, r.stderr)


def test_decision_log_is_reopened_by_sigusr1_and_every_sighup(start):
    """After logrotate moves the decision log, SIGUSR1, and any SIGHUP,
    accepted or refused (a bad config), reopen it: new decisions go to
    the new file, not on into the rotated one."""
    d = start()
    c = PolicyClient(d.policy_sock)

    def decide_over_limit(tag):
        user, _ = fresh(tag)
        for i in range(LIMIT + 1):
            ask_bytes(c, rcpt_request(user=user, instance="%s-%d" % (user, i)))
        return user

    def rotated_then(signum, tag):
        os.rename(d.decisions, d.decisions + ".1")
        os.kill(d.proc.pid, signum)
        wait_for(lambda: os.path.exists(d.decisions), what="the log reopened")
        user = decide_over_limit(tag)
        wait_for(lambda: user in open(d.decisions).read(),
                 what="the decision in the new file")
        assert user not in open(d.decisions + ".1").read()
        os.unlink(d.decisions + ".1")

    decide_over_limit("before")
    rotated_then(signal.SIGUSR1, "usr1")
    rotated_then(signal.SIGHUP, "hup")  # accepted
    with open(d.config, "a") as f:
        f.write("bogus_section: 1\n")
    rotated_then(signal.SIGHUP, "refused")
    assert "reload refused" in d.read_log()
    c.close()


def test_systemd_is_told_ready_reloading_and_stopping(tmp_path, monkeypatch):
    """Type=notify: READY=1 once the daemon answers, RELOADING=1 then
    READY=1 around a reload (accepted or refused, with a STATUS= saying
    which), STOPPING=1 at SIGTERM; sent to $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    ns.settimeout(HANG)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    d = Daemon(tmp_path / "d").start()
    try:
        first = ns.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=answering"), first
        d.send_signal(signal.SIGHUP)
        assert ns.recv(4096).decode() == "RELOADING=1"
        assert ns.recv(4096).decode() == \
            "READY=1\nSTATUS=answering; configuration reloaded"
        with open(d.config, "a") as f:
            f.write("bogus_section: 1\n")
        d.send_signal(signal.SIGHUP)
        assert ns.recv(4096).decode() == "RELOADING=1"
        refused = ns.recv(4096).decode()
        assert refused.startswith("READY=1\nSTATUS=answering; the last "
                                  "reload was refused: "), refused
        assert "bogus_section" in refused
    finally:
        assert d.stop() == 0
    assert ns.recv(4096).decode() == "STOPPING=1"
    ns.close()


def test_chokepoint_reload_says_whether_the_configuration_was_taken(start):
    """`chokepoint reload` does what SIGHUP does and answers: taken (exit
    0), or refused with the file, line and reason (exit 1), the running
    configuration kept."""
    d = start()
    r = subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "reload"],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0 and r.stdout.startswith("reloaded "), r
    assert d.ctl("reload")["reloaded"] == d.config
    with open(d.config, "a") as f:
        f.write("bogus_section: 1\n")
    r = subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "reload"],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 1, r
    assert "reload refused, the running configuration stays" in r.stdout, r
    assert d.config in r.stdout and "bogus_section" in r.stdout, r
    assert_served(d)


def test_journald_priorities_on_its_stream(tmp_path, monkeypatch):
    """Under systemd (JOURNAL_STREAM names stderr) each line carries its
    priority for journald: <6> info, <4> warning; elsewhere none."""
    d = Daemon(tmp_path / "j")
    open(d.log, "ab").close()
    st = os.stat(d.log)
    monkeypatch.setenv("JOURNAL_STREAM", "%d:%d" % (st.st_dev, st.st_ino))
    d.start()
    try:
        c = PolicyClient(d.policy_sock)
        ask_bytes(c, {"request": "smtpd_access_policy",
                      "protocol_state": "RCPT", "recipient": "r@x"})
        c.close()
        wait_for(lambda: "<4>chokepointd: warning: " in d.read_log(),
                 what="a warning with its priority")
        lines = [l for l in d.read_log().splitlines() if l]
        assert all(re.match(r"<[3467]>chokepointd: ", l) for l in lines), \
            lines
        assert any(l.startswith("<6>chokepointd: info: ") and " started: " in l
                   for l in lines), lines
    finally:
        assert d.stop() == 0
    d2 = Daemon(tmp_path / "plain")
    monkeypatch.delenv("JOURNAL_STREAM")
    d2.start()
    assert d2.stop() == 0
    assert all(l.startswith("chokepointd: ")
               for l in d2.read_log().splitlines() if l), d2.read_log()
