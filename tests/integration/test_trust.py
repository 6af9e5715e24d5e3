"""Trust and hardening (issue 12), through the real sockets: only trusted
callers (Postfix's uid, root) may speak for customers on any listener; a
flood from another uid, or from one trusted caller, does not shut the
others out; a second instance leaves a running one alone; a lost store is
not silently replaced; the descriptor limit is raised or the start
refused; empty lines and peer warnings cannot flood the log; the daemon
drops to daemon.user."""
import json
import os
import pwd
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cpd import (CHOKEPOINT, CHOKEPOINTD,  # noqa: E402
                 DEFAULT_CLASSES as DEFAULT_CLASSES_TEXT,
                 HANG, Daemon, policy_request, rcpt_request, wait_for)
from test_protocol import free_port  # noqa: E402

NOBODY = pwd.getpwnam("nobody")
# the ASan+UBSan daemon is several times slower: latency bounds widen
SANITIZED = os.environ.get("CHOKEPOINT_SANITIZED") == "1"

# Run as another user: connect to ADDR (a unix path or HOST:PORT, optional
# SOURCE address), send DATA (hex), and report what came back.
PROBE = r"""
import json, socket, sys
addr, data, src = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3]
out = {"connected": False, "reply": "", "error": ""}
try:
    if addr.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = addr
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if src:
            s.bind((src, 0))
        target = (host, int(port))
    s.settimeout(float(sys.argv[4]))  # a hang guard (cpd.HANG)
    s.connect(target)
    out["connected"] = True
    try:
        s.sendall(data)
        buf = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
            if buf.endswith(b"\n\n") or len(buf) > 100:
                break
        out["reply"] = buf.decode("latin-1")
    except (ConnectionResetError, BrokenPipeError):
        pass
except OSError as e:
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""

# Run as another user: hold up to N connections to ADDR until stdin is
# closed and at least NEED have been refused; a connection the server
# closes is opened again; every one sends a request every 2 s. Prints
# "ready" once N were opened, then at the end how many were refused
# (closed without a reply) and the most held at once.
FLOOD = r"""
import json, selectors, socket, sys, time
addr, n, need, req = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
def conn():
    if addr.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(addr)
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect((host, int(port)))
    s.setblocking(False)
    return s
sel = selectors.DefaultSelector()
sel.register(sys.stdin, selectors.EVENT_READ)
socks = {}
stop = ready = False
refused = opened = most = 0
next_send = time.monotonic()
while not (stop and refused >= need):
    while len(socks) < n:
        try:
            s = conn()
        except OSError:
            break
        opened += 1
        socks[s] = True
        sel.register(s, selectors.EVENT_READ)
    most = max(most, len(socks))
    if opened >= n and not ready:
        print("ready", flush=True)
        ready = True
    if time.monotonic() >= next_send:
        for s in list(socks):
            try:
                s.send(req)
            except OSError:
                pass
        next_send = time.monotonic() + 2
    for key, _ in sel.select(0.05):
        s = key.fileobj
        if s is sys.stdin:
            sys.stdin.read()  # the test is done: EOF
            sel.unregister(sys.stdin)
            stop = True
            continue
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            data = b""
        if not data:
            refused += 1
            sel.unregister(s)
            del socks[s]
            s.close()
print(json.dumps({"opened": opened, "refused": refused, "most": most}))
"""


def run_as(user, script, *args):
    pw = pwd.getpwnam(user)
    if script is PROBE:
        args += (HANG,)
    r = subprocess.run([sys.executable, "-c", script] + [str(a) for a in args],
                       user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def spawn_as(user, script, *args):
    pw = pwd.getpwnam(user)
    return subprocess.Popen([sys.executable, "-c", script] +
                            [str(a) for a in args],
                            user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ask(addr, attrs, timeout=HANG):
    """One request as this process (root); the reply line."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    s.sendall(policy_request(attrs))
    buf = b""
    while not buf.endswith(b"\n\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    s.close()
    return buf.decode()


def log_count(d, pattern):
    return len(re.findall(pattern, d.read_log()))


def wait_log(d, pattern):
    try:
        wait_for(lambda: re.search(pattern, d.read_log()))
    except AssertionError:
        raise AssertionError("no log line %r:\n%s" %
                             (pattern, d.read_log()[-3000:]))


@pytest.fixture
def open_dir():
    """A socket directory every local user may enter (so that the test,
    not the file system, is what refuses them)."""
    d = tempfile.mkdtemp(prefix="cp-trust-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    import shutil
    shutil.rmtree(d)


@pytest.fixture
def daemons():
    started = []
    yield started
    for d in started:
        d.stop()


def forged(victim, inst, client="198.51.100.7"):
    return rcpt_request(user=victim, instance=inst, client=client)


def test_untrusted_local_user_refused_on_every_listener(tmp_path, open_dir,
                                                        daemons):
    tcp, milter = free_port(), free_port()
    d = Daemon(tmp_path, tcp_port=tcp, sock_dir=open_dir,
               extra={"daemon": "socket_group: nogroup"},
               classes="content:\n  milter: inet:127.0.0.1:%d\n" % milter +
               "classes:\n  residential:\n    limits:\n"
               "      - { metric: messages, window: 1h, max: 100 }\n"
               "  unauthenticated:\n    limits:\n"
               "      - { metric: messages, window: 1h, max: 100 }\n")
    daemons.append(d.start())
    assert os.stat(d.policy_sock).st_mode & 0o777 == 0o660
    victim = "victim@isp.example"
    # nobody can reach every listener, and is refused on each: no reply,
    # nothing decided
    for n, addr in enumerate((d.policy_sock, "127.0.0.1:%d" % tcp)):
        for k in range(7):
            req = policy_request(forged(victim, "forged-%d-%d" % (n, k),
                                        client="198.51.%d.7" % (100 + k)))
            out = run_as("nobody", PROBE, addr, req.hex(), "")
            assert out["connected"] and out["reply"] == "", out
    optneg = struct.pack(">IcIII", 13, b"O", 6, 0x1ff, 0x1fffff)
    out = run_as("nobody", PROBE, "127.0.0.1:%d" % milter, optneg.hex(), "")
    assert out["connected"] and out["reply"] == "", out
    wait_log(d, r"unix#\d+ uid=%d pid=\d+: refused: not a trusted caller: "
                r"its uid is not in daemon.trusted_users" % NOBODY.pw_uid)
    wait_log(d, r"tcp:127\.0\.0\.1:\d+ uid=%d: refused: not a trusted "
                r"caller: its uid is not in daemon.trusted_users"
             % NOBODY.pw_uid)
    st = d.ctl("status")
    assert st["connections_untrusted"] == 15, st
    assert not [x for x in d.decisions_list()
                if x["instance"].startswith("forged")]
    assert "forged" not in d.read_log().replace("refused", "")
    # root is served on the same listeners; the victim's state is its own
    for addr in (d.policy_sock, ("127.0.0.1", tcp)):
        assert ask(addr, rcpt_request(user=victim, instance="own")) \
            .startswith("action=")
    show = d.ctl("show", victim)
    assert show["state"] == "NORMAL", show
    # Postfix's uid is trusted by default (its smtpd runs as postfix)
    pf = pwd.getpwnam("postfix")
    req = policy_request(rcpt_request(user="pf@isp.example", instance="pf"))
    out = run_as("postfix", PROBE, "127.0.0.1:%d" % tcp, req.hex(), "")
    assert out["reply"].startswith("action="), out
    assert [x for x in d.decisions_list() if x["instance"] == "pf"]
    assert pf.pw_uid != 0


def test_policy_socket_is_0660_group_postfix(tmp_path, open_dir, daemons):
    d = Daemon(tmp_path, sock_dir=open_dir)
    daemons.append(d.start())
    st = os.stat(d.policy_sock)
    assert st.st_mode & 0o777 == 0o660
    import grp
    assert st.st_gid == grp.getgrnam("postfix").gr_gid
    out = run_as("nobody", PROBE, d.policy_sock, b"x".hex(), "")
    assert not out["connected"] and "PermissionError" in out["error"], out
    admin = os.stat(d.admin_sock)
    assert admin.st_mode & 0o777 == 0o600


def test_tcp_caller_outside_trusted_networks_refused(tmp_path, daemons):
    tcp = free_port()
    d = Daemon(tmp_path, tcp_port=tcp,
               extra={"daemon": "trusted_networks: [127.0.0.1/32, '::1']"})
    daemons.append(d.start())
    req = policy_request(rcpt_request(user="u@isp.example", instance="far"))
    out = run_as("root", PROBE, "127.0.0.1:%d" % tcp, req.hex(), "127.0.0.2")
    assert out["connected"] and out["reply"] == "", out
    wait_log(d, r"tcp:127\.0\.0\.2:\d+ uid=0: refused: not a trusted caller: "
                r"its address is not in daemon.trusted_networks")
    out = run_as("root", PROBE, "127.0.0.1:%d" % tcp, req.hex(), "127.0.0.1")
    assert out["reply"].startswith("action="), out


def latencies(addr, n, prefix):
    """n requests on one keep-alive connection (as Postfix does): seconds
    each."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(HANG)
    s.connect(addr)
    out = []
    for i in range(n):
        req = policy_request(rcpt_request(user="%s%d@isp.example" % (prefix, i % 50),
                                          instance="%s-%d" % (prefix, i)))
        t0 = time.monotonic()
        s.sendall(req)
        buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = s.recv(4096)
            assert chunk, "closed after %d requests" % i
            buf += chunk
        out.append(time.monotonic() - t0)
        time.sleep(0.005)
    s.close()
    return out


def p99(xs):
    return statistics.quantiles(xs, n=100)[98]


@pytest.mark.serial
@pytest.mark.parametrize("flooder", ["nobody", "postfix"])
def test_4096_keepalive_connections_do_not_shut_postfix_out(tmp_path, daemons,
                                                            flooder):
    """4,096 keep-alive connections from one uid (an untrusted one: all
    refused; a trusted one: held up to its share) while root's requests
    (standing in for another Postfix) are timed. `serial`: the p99 is
    compared with the calm one, so no other test runs meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 9000:
        pytest.skip("RLIMIT_NOFILE hard limit %d" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (9000, hard))
    tcp = free_port()
    d = Daemon(tmp_path, tcp_port=tcp,
               extra={"protocol": "idle_timeout: 60s\nmax_connections: 4096",
                      "daemon": "log_level: info"})
    daemons.append(d.start())
    addr = ("127.0.0.1", tcp)
    try:
        before = latencies(addr, 300, "calm")
        req = policy_request(rcpt_request(user="flood@isp.example",
                                          instance="flood"))
        fl = spawn_as(flooder, FLOOD, "127.0.0.1:%d" % tcp, 4096,
                      4096 if flooder == "nobody" else 0, req.hex())
        # built up: 4,096 opened
        assert fl.stdout.readline() == "ready\n", fl.stderr.read()
        during = latencies(addr, 300, "busy")
        out, err = fl.communicate("", timeout=HANG)
        assert fl.returncode == 0, err
        res = json.loads(out)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    st = d.ctl("status")
    if flooder == "nobody":
        assert st["connections_untrusted"] >= 4096, st
        assert res["refused"] >= 4096, res
    else:
        # the trusted flooder holds its share (3/4 of max_connections)
        # and no more; the rest of the room stays for other callers
        assert st["connections_over_share"] >= 4096 - 3072, st
        assert 3000 <= res["most"] <= 4096, res
    assert len(during) == 300
    b, w = p99(before), p99(during)
    print("p99 before %.2f ms, during %.2f ms (%s flood: %s)"
          % (b * 1e3, w * 1e3, flooder, res))
    # "normal latency" on a shared 2-core machine: well under a Postfix
    # policy timeout, and within a small multiple of the calm p99
    assert w < (max(20 * b, 0.2) if SANITIZED else max(10 * b, 0.05)), (b, w)


def test_second_instance_leaves_the_running_one_alone(tmp_path, daemons):
    d = Daemon(tmp_path / "a")
    daemons.append(d.start())
    pid = d.proc.pid
    # the same store: refused before any socket is touched
    r = subprocess.run([CHOKEPOINTD, "-c", d.config], capture_output=True,
                       text=True, timeout=HANG)
    assert r.returncode == 1
    assert "another chokepointd (pid %d) is using the store" % pid in r.stderr
    assert ask(d.policy_sock, rcpt_request(instance="still")).startswith("action=")
    # another store, the same sockets: the live socket is not unlinked
    other = Daemon(tmp_path / "b")
    text = open(other.config).read().replace(other.policy_sock, d.policy_sock)
    open(other.config, "w").write(text)
    r = subprocess.run([CHOKEPOINTD, "-c", other.config], capture_output=True,
                       text=True, timeout=HANG)
    assert r.returncode == 1
    assert "in use by a running process" in r.stderr, r.stderr
    assert ask(d.policy_sock, rcpt_request(instance="still2")).startswith("action=")


def test_a_lost_store_is_not_replaced_silently(tmp_path, daemons):
    d = Daemon(tmp_path)
    d.start()
    d.ctl("block", "lost@isp.example", "--reason", "test", "--create")
    assert d.stop() == 0
    for f in os.listdir(str(tmp_path)):
        if f.startswith("state.db") and not f.endswith(".lock"):
            os.unlink(os.path.join(str(tmp_path), f))
    open(d.db, "w").close()  # an empty file where the store was
    r = subprocess.run([CHOKEPOINTD, "-c", d.config], capture_output=True,
                       text=True, timeout=HANG)
    assert r.returncode == 1
    assert re.search(r"store .*state\.db is empty, but .*state\.db\.lock shows "
                     r"a store was kept here", r.stderr), r.stderr
    daemons.append(d.start(args=["--new-store"]))
    # started afresh, as asked: the account and its hold are gone
    assert "unknown account" in d.ctl("show", "lost@isp.example",
                                      check=False)["error"]


def test_descriptor_limit_raised_or_start_refused(tmp_path, daemons):
    d = Daemon(tmp_path, extra={"protocol": "max_connections: 4096"})
    # a soft limit below max_connections + margin is raised
    d.logf = open(d.log, "ab")
    d.proc = subprocess.Popen(
        ["prlimit", "--nofile=1024:8192", CHOKEPOINTD, "-c", d.config],
        stdout=d.logf, stderr=d.logf)
    daemons.append(d)
    wait_log(d, r"raised the descriptor limit from 1024 to 4352 "
                r"\(protocol.max_connections 4096 \+ 256\)")
    lim = open("/proc/%d/limits" % d.proc.pid).read()
    assert re.search(r"Max open files\s+4352\s+8192", lim), lim
    # 1,500 connections (the old daemon stopped accepting at ~1,000 with
    # nothing in the log) are all served
    socks = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4000), hard))
    try:
        wait_log(d, r"started:")
        for i in range(1500):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.policy_sock)
            socks.append(s)
        deadline = time.monotonic() + HANG
        while d.ctl("status")["connections"] < 1500:
            assert time.monotonic() < deadline, d.ctl("status")
            time.sleep(0.1)
        assert d.ctl("status")["accept_errors"] == 0
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    d.stop()
    # a hard limit below it (and no CAP_SYS_RESOURCE to raise it, as in a
    # unit with LimitNOFILE=1024): a clear refusal to start
    r = subprocess.run(["prlimit", "--nofile=1024:1024", "setpriv",
                        "--bounding-set", "-sys_resource", CHOKEPOINTD, "-c",
                        d.config], capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 1
    assert "the descriptor limit is 1024 (hard limit 1024), below " \
           "protocol.max_connections (4096) + 256" in r.stderr, r.stderr


def test_empty_lines_and_garbage_cannot_flood_the_log(tmp_path, daemons):
    d = Daemon(tmp_path, extra={"daemon": "log_level: info"})
    daemons.append(d.start())
    size0 = os.path.getsize(d.log)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.policy_sock)
    try:
        s.sendall(b"\n" * 100000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(HANG)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        pass
    s.close()
    assert got == b""  # closed at the first empty request, nothing answered
    wait_log(d, r"closing: empty request \(after 0 requests\)")
    # 500 connections of garbage: warnings capped by the rate limit
    for i in range(500):
        g = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        g.connect(d.policy_sock)
        g.sendall(b"\x00\x01garbage\n\n")
        g.close()
    st = wait_for(lambda: (lambda st: st["protocol_errors"] >= 500 and st)(
        d.ctl("status")), "500 protocol errors")
    assert st["peer_warnings_unlogged"] > 0, st
    grew = os.path.getsize(d.log) - size0
    warnings = log_count(d, r"warning: unix#")
    assert warnings <= 130, warnings
    assert grew < 40000, grew
    assert ask(d.policy_sock, rcpt_request(instance="after")).startswith("action=")


def test_runs_as_daemon_user_with_private_files(open_dir, daemons):
    # a directory nobody can reach (pytest's are root's, 0700)
    d = Daemon(os.path.join(open_dir, "d"), extra={"daemon": "user: nobody"})
    daemons.append(d.start())
    assert ask(d.policy_sock, rcpt_request(instance="u")).startswith("action=")
    status = open("/proc/%d/status" % d.proc.pid).read()
    uids = re.search(r"Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status).groups()
    assert set(uids) == {str(NOBODY.pw_uid)}, uids
    assert re.search(r"CapEff:\s+0+\n", status), status
    wait_log(d, r"running as nobody \(uid %d" % NOBODY.pw_uid)
    deadline = time.monotonic() + HANG
    while not os.path.exists(d.db) and time.monotonic() < deadline:
        time.sleep(0.05)
    st = os.stat(d.db)
    assert st.st_uid == NOBODY.pw_uid
    assert st.st_mode & 0o077 & ~0o040 == 0, oct(st.st_mode)  # 0640 at most
    dl = os.stat(d.decisions)
    assert dl.st_mode & 0o007 == 0, oct(dl.st_mode)
    # the admin CLI (root) still works
    assert d.ctl("status")["connections"] >= 0


def test_reasons_and_replies_are_clean_text(tmp_path, daemons):
    """An admin reason with terminal escapes is escaped in the log and the
    history; a reply that names an account with 8-bit bytes is 7-bit."""
    d = Daemon(tmp_path)
    daemons.append(d.start())
    login = "m\u00fcller@isp.example"
    d.ctl("block", login, "--reason", "paid \x1b[31mIN RED\x1b[0m \u00e9",
          "--create")
    log = d.read_log()
    assert "\x1b" not in log
    assert "\\x1b[31mIN RED\\x1b[0m" in log, log[-2000:]
    r = subprocess.run([CHOKEPOINTD.replace("chokepointd", "chokepoint"), "-s",
                        d.admin_sock, "history", login],
                       capture_output=True, timeout=HANG)
    assert b"\x1b" not in r.stdout and b"\\x1b[31m" in r.stdout, r.stdout
    reply = ask(d.policy_sock, rcpt_request(user=login, instance="held"))
    assert reply.startswith("action=")
    assert all(0x20 <= ord(ch) < 0x7f for ch in reply.rstrip("\n")), reply


@pytest.fixture
def small_disk():
    """A 48 MiB tmpfs: a disk that can be filled."""
    d = tempfile.mkdtemp(prefix="cp-full-", dir="/tmp")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a tmpfs: " + r.stderr)
    yield d
    subprocess.run(["umount", "-l", d])
    os.rmdir(d)


def fill(path):
    """Write zeros to `path` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    for chunk in (1 << 20, 4096, 1):
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
    os.close(fd)


def test_a_failed_state_write_is_reported_and_retried(small_disk, daemons):
    """Disk full: an admin block says it was not recorded and exits
    non-zero; the hold is in force; the history row is written once there
    is room again, and survives a restart."""
    # the incident's webhook cannot be delivered (nothing listens): the
    # job waits in the outbox, and must be in the store to survive a crash
    d = Daemon(os.path.join(small_disk, "d"),
               extra={"delivery": "max_recipients: 1024"},
               classes=DEFAULT_CLASSES_TEXT +
               "notify:\n  from: abuse@isp.example\n  customer: false\n"
               "  webhook: http://127.0.0.1:%d/\n  retry: 200ms\n"
               "  attempts: 100\n" % free_port())
    d.start()
    daemons.append(d)
    filler = os.path.join(small_disk, "filler")
    fill(filler)
    r = subprocess.run([CHOKEPOINTD.replace("chokepointd", "chokepoint"),
                        "-s", d.admin_sock, "block", "full@isp.example",
                        "--reason", "disk full test", "--create"],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "MANUAL_HOLD is in force, but the store write failed" in \
        r.stdout + r.stderr, r.stdout + r.stderr
    # (the worker may hold the webhook job for an attempt just now: it
    # is marked when it comes back for its retry)
    deadline = time.monotonic() + HANG
    while d.ctl("status")["outbox_unwritten"] != 1:
        assert time.monotonic() < deadline, d.ctl("status")
        time.sleep(0.05)
    assert d.ctl("status")["unrecorded"] == 1
    reply = ask(d.policy_sock, rcpt_request(user="full@isp.example",
                                            instance="full1"))
    assert not reply.startswith("action=DUNNO"), reply
    os.unlink(filler)
    wait_log(d, r"account u:full@isp\.example: state change NORMAL -> "
                r"MANUAL_HOLD recorded after \d+ retries")
    wait_log(d, r"outbox: 1 jobs written to the outbox table after all")
    st = d.ctl("status")
    assert st["unrecorded"] == 0 and st["outbox_unwritten"] == 0, st
    hist = d.ctl("history", "full@isp.example")
    assert "disk full test" in json.dumps(hist), hist
    d.kill9()  # a crash: the notification must come back from the store
    d.start()
    assert d.ctl("show", "full@isp.example")["state"] == "MANUAL_HOLD"
    wait_log(d, r"resuming 1 notification")


def test_damaged_records_are_counted_and_unknown_states_refused(tmp_path,
                                                                 daemons):
    import sqlite3
    d = Daemon(tmp_path)
    d.start()
    for i in range(3):
        ask(d.policy_sock, rcpt_request(user="ok%d@isp.example" % i,
                                        instance="ok%d" % i))
    d.ctl("block", "held@isp.example", "--reason", "test", "--create")
    assert d.stop() == 0
    db = sqlite3.connect(d.db)
    db.execute("UPDATE accounts SET data=x'00' WHERE key='u:ok0@isp.example'")
    db.commit()
    db.close()
    d.start()
    wait_log(d, r"1 damaged counter records skipped")
    assert d.ctl("show", "held@isp.example")["state"] == "MANUAL_HOLD"
    assert d.stop() == 0
    db = sqlite3.connect(d.db)
    db.execute("UPDATE account_states SET state=200 "
               "WHERE key='u:held@isp.example'")
    db.commit()
    db.close()
    r = subprocess.run([CHOKEPOINTD, "-c", d.config], capture_output=True,
                       text=True, timeout=HANG)
    assert r.returncode == 1
    assert "account u:held@isp.example has state 200, which this version " \
           "does not know" in r.stderr, r.stderr


def test_tracked_accounts_are_capped_by_evicting_idle_clean_ones(tmp_path,
                                                                daemons):
    """100,000 invented accounts cost memory for good before; now
    store.max_accounts evicts idle, clean ones (drained limits, no
    evidence worth keeping), never one with a state."""
    classes = ("classes:\n  residential:\n    limits:\n"
               "      - { metric: messages, window: 2s, max: 100 }\n"
               "  unauthenticated:\n    limits:\n"
               "      - { metric: messages, window: 2s, max: 100 }\n")
    d = Daemon(tmp_path, classes=classes,
               extra={"store": "checkpoint_interval: 500ms\n"
                               "max_accounts: 1000"})
    daemons.append(d.start())
    d.ctl("block", "kept@isp.example", "--reason", "held on purpose",
          "--create")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.policy_sock)
    f = s.makefile("rb")

    def send(n, prefix):
        for i in range(n):
            s.sendall(policy_request(rcpt_request(
                user="%s%d@isp.example" % (prefix, i), instance="%s%d" % (prefix, i),
                recipient="friend@example.com")))
            assert f.readline().startswith(b"action=")
            f.readline()
    send(3000, "inv")
    assert d.ctl("status")["accounts"] >= 3000
    time.sleep(2.5)  # the 2 s windows drain
    send(20, "late")  # grown by 1 % of the cap: scan again
    # a scan that ran while accounts were still in use is repeated a
    # minute later at the latest (a slow, sanitized daemon on a busy host)
    deadline = time.monotonic() + HANG
    while d.ctl("status")["accounts"] > 1000:
        assert time.monotonic() < deadline, d.ctl("status")
        time.sleep(0.2)
    st = d.ctl("status")
    assert st["accounts_evicted"] >= 2000, st
    wait_log(d, r"evicted \d+ idle accounts \(store.max_accounts 1000\)")
    assert d.ctl("show", "kept@isp.example")["state"] == "MANUAL_HOLD"
    s.close()
    d.wait_checkpoint(0.5)  # a checkpoint deletes the evicted rows
    assert d.stop() == 0
    d.start()
    assert d.ctl("status")["accounts"] <= 1000 + 30
    assert d.ctl("show", "kept@isp.example")["state"] == "MANUAL_HOLD"


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_full_listen_queue_is_logged(tmp_path, daemons, kind):
    """The daemon is stopped (SIGSTOP) while clients keep connecting: the
    kernel's queue (protocol.listen_backlog) fills and refuses the rest.
    Resumed, the daemon logs that its queue was full, and serves."""
    import signal
    tcp = free_port()
    d = Daemon(tmp_path, tcp_port=tcp,
               extra={"protocol": "listen_backlog: 16"})
    daemons.append(d.start())
    # idle first: the start-up probes answered, the loop back in its poll
    assert ask(d.policy_sock, rcpt_request(instance="before")).startswith("action=")
    time.sleep(0.3)
    d.proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + HANG
    while open("/proc/%d/stat" % d.proc.pid).read().split(") ")[1][0] != "T":
        assert time.monotonic() < deadline, "chokepointd did not stop"
        time.sleep(0.01)
    socks = []
    try:
        for i in range(40):
            if kind == "unix":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(d.policy_sock)
                except BlockingIOError:  # the queue is full: refused
                    s.close()
                    continue
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", tcp))
                except BlockingIOError:
                    pass
            socks.append(s)
        time.sleep(0.5)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    name = "unix:" + d.policy_sock if kind == "unix" else \
        "inet:127.0.0.1:%d" % tcp
    wait_log(d, re.escape(name) + r": listen queue full \(\d+ waiting, "
                r"limit 16\)")
    assert d.ctl("status")["listen_full"] >= 1
    for s in socks:
        s.close()
    assert ask(d.policy_sock, rcpt_request(instance="after")).startswith("action=")


def test_admin_read_group_may_read_but_not_act(tmp_path, open_dir, daemons):
    """daemon.admin_read_group: first-line staff (here `nobody` with the
    group `staff` among its supplementary groups) may run the commands
    that read (status, show, top, history, incident) but not those that
    act (block, release, allow, reload), which are refused and logged. A
    user outside the group cannot open the admin socket at all."""
    import grp
    import shutil
    d = Daemon(tmp_path, admin_dir=open_dir,
               extra={"daemon": "admin_read_group: staff"})
    daemons.append(d.start())
    st = os.stat(d.admin_sock)
    assert st.st_mode & 0o777 == 0o660
    assert st.st_gid == grp.getgrnam("staff").gr_gid
    assert subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "block",
                           "zed@isp.example", "--create", "--reason", "t1"],
                          capture_output=True, timeout=HANG).returncode == 0
    cli = os.path.join(open_dir, "chokepoint")  # reachable by nobody
    shutil.copy(CHOKEPOINT, cli)

    def as_staff(*args, groups=("staff",)):
        return subprocess.run([cli, "-s", d.admin_sock] + list(args),
                              capture_output=True, text=True, timeout=HANG,
                              user="nobody", group="nogroup",
                              extra_groups=list(groups))

    for args in (["status"], ["show", "zed@isp.example"], ["top"],
                 ["history", "zed@isp.example"], ["--json", "status"]):
        r = as_staff(*args)
        assert r.returncode == 0, (args, r)
    assert "MANUAL_HOLD" in as_staff("show", "zed@isp.example").stdout
    n = d.ctl("history", "zed@isp.example")["history"][0]["incident"]
    assert as_staff("incident", str(n)).returncode == 0
    for args in (["release", "zed@isp.example", "--reason", "x"],
                 ["block", "ann@isp.example", "--create", "--reason", "x"],
                 ["allow", "zed@isp.example", "--reason", "x"],
                 ["reload"]):
        r = as_staff(*args)
        assert r.returncode == 1 and "permission denied" in r.stdout + \
            r.stderr and "admin_read_group" in r.stdout + r.stderr, (args, r)
    assert d.ctl("show", "zed@isp.example")["state"] == "MANUAL_HOLD"
    assert re.search(r'admin: refused "release zed@isp\.example[^"]*" from '
                     r'uid %d: a member of daemon\.admin_read_group may '
                     r'only read' % NOBODY.pw_uid, d.read_log()), \
        d.read_log()[-2000:]
    # outside the group: the socket's mode refuses the connection
    r = as_staff("status", groups=())
    assert r.returncode != 0 and "ermission denied" in r.stderr, r


def test_admin_read_group_unreachable_when_started_unprivileged(open_dir,
                                                                daemons):
    """Started as an unprivileged user outside daemon.admin_read_group (the
    systemd unit runs as chokepoint), the daemon cannot give the admin
    socket to the group: it says how to fix it and starts anyway with the
    socket root's and its own (0600), instead of not starting at all."""
    d = Daemon(os.path.join(open_dir, "d"),
               extra={"daemon": "admin_read_group: staff\n"
                                "socket_group: nogroup"})
    os.chown(d.dir, NOBODY.pw_uid, NOBODY.pw_gid)
    daemons.append(d.start(user="nobody"))
    assert os.stat(d.admin_sock).st_mode & 0o777 == 0o600
    assert "daemon.admin_read_group: cannot give %s to group" % \
        d.admin_sock in d.read_log(), d.read_log()[-2000:]
    assert "usermod -aG GROUP chokepoint" in d.read_log()
    assert d.ctl("status")["connections"] >= 0
