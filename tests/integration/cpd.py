"""Start and stop a real chokepointd for the integration tests.

Everything lives under a temporary directory: config, customer map, state
database, sockets, logs. The daemon is started by the test and stopped by
its PID; nothing else is signalled.
"""
import json
import os
import signal
import socket
import subprocess
import time

# the CLI records sudo's SUDO_USER as the operator; tests that want one
# say so (--by, or SUDO_USER in the command's own environment)
os.environ.pop("SUDO_USER", None)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CHOKEPOINT_BUILD", os.path.join(ROOT, "build"))
CHOKEPOINTD = os.path.join(BUILD, "chokepointd")
CHOKEPOINT = os.path.join(BUILD, "chokepoint")

# A hang guard, not a deadline: how long a test waits for something that
# takes seconds (a daemon's start, a log line, a CLI call, a simulation)
# before it gives up. Waits poll for their condition, so a large value
# costs nothing when things work; it only stops a hung daemon from hanging
# the suite, and a busy machine (or the sanitizers) cannot trip it.
# CHOKEPOINT_HANG_GUARD sets it (seconds).
HANG = float(os.environ.get("CHOKEPOINT_HANG_GUARD", "600"))


def wait_for(pred, what="condition", timeout=None, step=0.05):
    """Poll `pred` until it returns something true; return that. Fails
    after `timeout` seconds (default: the hang guard)."""
    deadline = time.monotonic() + (HANG if timeout is None else timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(step)

DEFAULT_CLASSES = """
classes:
  residential:
    limits:
      - { metric: messages, window: 1h, max: 100 }
  unauthenticated:
    limits:
      - { metric: messages, window: 1h, max: 100 }
"""


def as_user(name):
    """Popen arguments that run a process as user `name` with its own
    groups only (none: as we are)."""
    if not name:
        return {}
    import grp
    import pwd
    pw = pwd.getpwnam(name)
    return {"user": pw.pw_uid, "group": pw.pw_gid,
            "extra_groups": [g.gr_gid for g in grp.getgrall()
                             if name in g.gr_mem]}


class Daemon:
    """One chokepointd under `tmpdir`.

    `classes` is the YAML text of the `classes:` section (and anything else
    appended to the generated config); `customer_map` the text of the map.
    `extra` maps top-level sections to YAML text added inside them, e.g.
    {"daemon": "shadow: true"}.

    `learning` is detection.learning: the tests of what a block does
    (notices, holds, releases) use accounts past their learning period
    (0: every account has habits enough to be blocked on the envelope's
    evidence); None leaves the shipped default (test_logins.py tests it).
    """

    def __init__(self, tmpdir, classes=DEFAULT_CLASSES, customer_map="",
                 extra=None, tcp_port=None, learning=0, sock_dir=None,
                 admin_dir=None):
        self.learning = learning
        self.dir = str(tmpdir)
        os.makedirs(self.dir, exist_ok=True)
        # sock_dir, admin_dir: directories other users can reach, for the
        # policy and the admin socket (test_trust.py)
        self.policy_sock = os.path.join(sock_dir or self.dir, "policy.sock")
        self.admin_sock = os.path.join(admin_dir or self.dir, "admin.sock")
        self.config = os.path.join(self.dir, "chokepoint.yaml")
        self.map = os.path.join(self.dir, "customers.map")
        self.db = os.path.join(self.dir, "state.db")
        self.log = os.path.join(self.dir, "chokepointd.log")
        self.decisions = os.path.join(self.dir, "decisions.jsonl")
        self.tcp_port = tcp_port
        self.proc = None
        self.logf = None
        self.write_config(classes, customer_map, extra or {})

    def config_text(self, classes, extra):
        listen = "    - unix:%s\n" % self.policy_sock
        if self.tcp_port:
            listen += "    - inet:127.0.0.1:%d\n" % self.tcp_port
        sect = {k: "".join("  %s\n" % l for l in v.strip().splitlines())
                for k, v in extra.items()}
        level = "" if "log_level" in extra.get("daemon", "") else \
            "  log_level: debug\n"
        return ("daemon:\n  listen:\n" + listen +
                "  admin_socket: %s\n  log: stderr\n" % self.admin_sock +
                level + "  decision_log: %s\n" % self.decisions +
                sect.get("daemon", "") +
                "protocol:\n" + sect.get("protocol", "  max_line: 2048\n") +
                "store:\n  path: %s\n" % self.db +
                sect.get("store", "  checkpoint_interval: 1s\n") +
                "identity:\n  customer_map: %s\n" % self.map +
                sect.get("identity", "") +
                "accounting:\n" +
                sect.get("accounting", "  reservation_timeout: 3s\n") +
                self.with_learning(classes))

    def with_learning(self, text):
        """detection.learning in the detection section of `text` (one is
        added if there is none)."""
        if self.learning is None or "\n  learning:" in text:
            return text
        line = "  learning: %d\n" % self.learning
        if text.startswith("detection:\n") or "\ndetection:\n" in text:
            head, sep, tail = text.partition(
                "detection:\n" if text.startswith("detection:\n")
                else "\ndetection:\n")
            return head + sep + line + tail
        return text + "detection:\n" + line

    def write_config(self, classes, customer_map="", extra=None):
        with open(self.config, "w") as f:
            f.write(self.config_text(classes, extra or {}))
        with open(self.map, "w") as f:
            f.write(customer_map)

    def start(self, timeout=None, args=(), user=None):
        # ready = the policy socket answers and this start's "started"
        # line is logged (the sockets are bound before the store is read);
        # user: start it as that user (as the systemd unit does), not root
        started = self.read_log().count(" started: ")
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([CHOKEPOINTD, "-c", self.config] +
                                     list(args),
                                     stdout=self.logf, stderr=self.logf,
                                     **as_user(user))
        deadline = time.monotonic() + (HANG if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("chokepointd exited %d:\n%s" %
                                   (self.proc.returncode, self.read_log()))
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.policy_sock)
                s.close()
                if self.read_log().count(" started: ") > started:
                    return self
                time.sleep(0.02)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("chokepointd did not start:\n" + self.read_log())

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        """SIGHUP, then wait until the log shows the outcome."""
        before = self.read_log().count("reload")
        self.send_signal(signal.SIGHUP)
        wait_for(lambda: self.read_log().count("reload") > before,
                 "a reload line in the log")

    def stop(self, sig=signal.SIGTERM, timeout=None):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(HANG if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        if self.logf:
            self.logf.close()
            self.logf = None
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def read_log(self):
        try:
            with open(self.log, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def decisions_list(self):
        try:
            with open(self.decisions) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def ctl(self, *args, check=True):
        """Run `chokepoint --json -s ADMIN args...` and return parsed JSON."""
        r = subprocess.run([CHOKEPOINT, "-s", self.admin_sock, "--json"] +
                           list(args), capture_output=True, text=True,
                           timeout=HANG)
        if check and r.returncode != 0:
            raise RuntimeError("chokepoint %s failed: %s" % (args, r.stderr))
        return json.loads(r.stdout) if r.stdout.strip() else None

    def wait_checkpoint(self, interval=1.0):
        """Wait until what was decided before the call is in the store:
        nothing changed is left unwritten and no checkpoint is writing
        (status `checkpoint_pending` is 0). Checkpoints run every
        store.checkpoint_interval (1 s in the tests), only when something
        changed; waiting for "one more checkpoint" raced with one that had
        already written everything."""
        wait_for(lambda: self.ctl("status")["checkpoint_pending"] == 0,
                 "everything written by a checkpoint", step=0.1)

    def counter(self, key, rule):
        """Current value of counter `rule` (e.g. "messages/1h") of `key`."""
        acct = self.ctl("show", key)
        for c in acct["counters"]:
            if c["rule"] == rule:
                return c["value"]
        raise KeyError(rule)


def policy_request(attrs):
    """Encode one policy request (dict) as Postfix sends it."""
    return "".join("%s=%s\n" % kv for kv in attrs.items()).encode() + b"\n"


def rcpt_request(user="u1@example.net", instance="i1", recipient="r@example.com",
                 client="192.0.2.10", state="RCPT", **more):
    a = {"request": "smtpd_access_policy", "protocol_state": state,
         "protocol_name": "ESMTP", "client_address": client,
         "client_name": "unknown", "helo_name": "pc", "sender": user,
         "recipient": recipient, "recipient_count": "0", "queue_id": "",
         "instance": instance, "size": "0", "sasl_method": "plain" if user else "",
         "sasl_username": user}
    a.update(more)
    return a


class PolicyClient:
    """A raw policy-protocol connection (unix socket or TCP)."""

    def __init__(self, address, timeout=HANG):
        if isinstance(address, tuple):
            self.s = socket.create_connection(address, timeout=timeout)
        else:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(address)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def read_reply(self):
        """One reply (bytes up to and including the empty line); b"" on EOF."""
        while b"\n\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk
        i = self.buf.index(b"\n\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def ask(self, attrs):
        self.send(policy_request(attrs))
        return self.read_reply().decode(errors="replace")

    def close(self):
        self.s.close()
