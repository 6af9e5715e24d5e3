"""A private Postfix smarthost and an smtp-sink for the integration tests.

Everything lives under one temporary directory (mode 0755, so that Postfix's
unprivileged daemons can reach the files and sockets in it):

    BASE/etc/          main.cf, master.cf, SASL config and sasldb, maps
    BASE/spool/        queue_directory (created by `postfix start`)
    BASE/data/         data_directory (owned by postfix)
    BASE/maillog       Postfix's log (maillog_file)
    BASE/sink/         one file per message received by smtp-sink
    BASE/policy.sock   a symlink to the policy socket of the chokepointd
                       under test; tests switch it with use_policy_socket(),
                       so one Postfix instance serves many daemons.
    BASE/milter.sock   the same for its milter (smtpd_milters,
                       use_milter_socket(); milter_default_action=accept).

Postfix listens on 127.0.0.1 only, on a free port; it relays everything
(relayhost) to smtp-sink on another free port, except two test domains
(transport map): mail to @nosuch.example goes to a second smtp-sink that refuses
every recipient with "550 5.1.1" (bounces), and mail to @stuck.example to a port
where nothing listens (it stays in the queue, deferred). master.cf also has
`smtp-suspect`, an smtp transport that says HELO suspect.test.example (the
reputation pool's transport in the tests). Postfix is stopped with
`postfix -c BASE/etc stop` (which signals the master PID in its own pid
file) and, if that fails, by that PID; smtp-sink by its PID. Nothing else
is signalled.

Postfix refuses a config directory that /etc/postfix/main.cf does not list
in alternate_config_directories: start() adds BASE/etc there (and prunes
entries of earlier runs whose directory is gone), stop() removes it again,
each under an exclusive lock (/etc/postfix/.chokepoint-tests.lock), as
parallel test workers start and stop their own instances.

Waits poll for their condition up to the hang guard (cpd.HANG).
"""
import base64
import fcntl
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from cpd import HANG

DEFAULT_MAIN_CF = "/etc/postfix/main.cf"
BASE_PREFIX = "chokepoint-pf-"
REALM = "test.example"
# Recipients that Postfix itself rejects (after the policy check) through
# check_recipient_access.
REJECTED_RCPT = "rejected@example.net"
BOUNCE_DOMAIN = "nosuch.example"  # next hop: 550 5.1.1 for every recipient
STUCK_DOMAIN = "stuck.example"    # next hop: connection refused


def _port_slice():
    """The ports this process hands out: a slice of those below the
    kernel's ephemeral range (ip_local_port_range), one slice per xdist
    worker. A port from bind(("", 0)) is an ephemeral one: between the
    test closing it and a server binding it, any outgoing connection on
    the machine (a redis-cli, a daemon's client socket, Postfix's smtp)
    may take it as its source port, and the server then fails to start.
    Below the range only listeners compete, and the bind check sees
    them; the slices keep parallel workers off each other's ports."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = 10000
    if low - first < 4000:
        return None  # no room below the range: ask the kernel
    w = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(w[2:]) if w[2:].isdigit() else 0
    size = (low - first) // 8
    a = first + (n % 8) * size
    return a, a + size


_slice = _port_slice()
_next_port = [None]


def free_port():
    """A TCP port on 127.0.0.1 that nothing uses right now, outside the
    ephemeral range (_port_slice()); each call in this process a new one
    until the slice wraps around."""
    if _slice is None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port
    a, b = _slice
    if _next_port[0] is None:
        _next_port[0] = a + (os.getpid() * 7919) % (b - a)
    for _ in range(b - a):
        port = _next_port[0]
        _next_port[0] = a + (port + 1 - a) % (b - a)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port in %d-%d" % (a, b))


def _postconf_default(*args):
    return subprocess.run(["postconf", "-c", "/etc/postfix"] + list(args),
                          capture_output=True, text=True, check=True).stdout


def _register_config_dir(confdir, add):
    """Add (or remove) `confdir` to alternate_config_directories in the
    default main.cf. Idempotent; also drops stale entries of earlier runs
    (our prefix, directory gone). Read, change and write under a lock:
    another test worker may be doing the same."""
    lock = os.path.join(os.path.dirname(DEFAULT_MAIN_CF),
                        ".chokepoint-tests.lock")
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _register_locked(confdir, add)


def _register_locked(confdir, add):
    if not os.path.exists(DEFAULT_MAIN_CF):
        open(DEFAULT_MAIN_CF, "a").close()
    cur = _postconf_default("-h", "alternate_config_directories").split()
    cur = [d.strip(",") for d in cur if d.strip(",")]
    stale_re = re.compile(r"^%s/%s[^/]*/etc$" %
                          (re.escape(tempfile.gettempdir()), BASE_PREFIX))
    new = [d for d in cur if not (stale_re.match(d) and not os.path.isdir(d))]
    if add and confdir not in new:
        new.append(confdir)
    if not add:
        new = [d for d in new if d != confdir]
    if new != cur:
        if new:
            cmd = ["-e", "alternate_config_directories = " + " ".join(new)]
        else:
            cmd = ["-X", "alternate_config_directories"]
        subprocess.run(["postconf", "-c", "/etc/postfix"] + cmd, check=True)


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
# the reputation pool: chokepointd answers FILTER smtp-suspect:... for
# accounts under suspicion; this transport greets with its own name
smtp-suspect unix -     -       n       -       -       smtp
  -o smtp_helo_name=suspect.test.example -o syslog_name=postfix/suspect
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = smarthost.{realm}
mydomain = {realm}
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{sink_port}
transport_maps = texthash:{d}/etc/transport
mynetworks = 127.0.0.0/8
biff = no
smtputf8_enable = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
default_process_limit = 20
notify_classes =
delay_warning_time = 0
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 2000
smtpd_client_connection_count_limit = 0
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {d}/etc/sasl
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
# SASL users relay; so does anything from 127.0.0.0/8 without SASL, which
# is how the tests get unauthenticated mail through.
smtpd_relay_restrictions = permit_sasl_authenticated, permit_mynetworks, reject
# The policy check comes first; Postfix's own recipient check (a map that
# rejects {rejected}) runs after it, so the policy service sees a RCPT
# that Postfix then rejects.
smtpd_recipient_restrictions =
    check_policy_service unix:{sock}
    check_recipient_access texthash:{d}/etc/recipient_access
smtpd_data_restrictions = check_policy_service unix:{sock}
smtpd_end_of_data_restrictions = check_policy_service unix:{sock}
# No smtpd_policy_service_default_action: a broken policy service must show
# as 451 4.3.5, not be papered over.
# chokepointd's milter (content fingerprints): a symlink like the policy
# socket. With no milter behind it, Postfix logs a warning and goes on.
smtpd_milters = unix:{milter}
milter_default_action = accept
milter_connect_timeout = 5s
smtpd_policy_service_timeout = 10s
smtpd_policy_service_max_idle = 2s
smtpd_policy_service_max_ttl = 30s
# an idle smtpd exits (and closes its policy connection) after 10 s, not
# 100: the end of a session chokepointd learns from that is seen sooner
max_idle = 10s
"""



class HeldTransaction:
    """See Postfix.open_transaction()."""

    def __init__(self, pf, to, user, password, sender):
        if isinstance(to, str):
            to = [to]
        self.s = socket.create_connection(("127.0.0.1", pf.port),
                                          timeout=HANG)
        self.f = self.s.makefile("rb")
        self.transcript = []
        try:
            self.transcript.append(("", self._reply()))
            self.cmd("EHLO client.%s" % REALM)
            if user:
                tok = base64.b64encode(("\0%s\0%s" % (
                    user, password or pf.users.get(user, "secret"))).encode())
                if not self.cmd("AUTH PLAIN " + tok.decode()).startswith("235"):
                    raise RuntimeError("AUTH failed: %r" % self.transcript)
            self.cmd("MAIL FROM:<%s>" % (sender or user or "anon@%s" % REALM))
            for rcpt in to:
                self.cmd("RCPT TO:<%s>" % rcpt)
        except Exception:
            self.close()
            raise

    def _reply(self):
        lines = []
        while True:
            l = self.f.readline().decode(errors="replace").rstrip("\r\n")
            if not l:
                raise RuntimeError("connection closed: %r" % self.transcript)
            lines.append(l)
            if len(l) < 4 or l[3] != "-":
                return "\n".join(lines)

    def cmd(self, c):
        self.s.sendall(c.encode() + b"\r\n")
        r = self._reply()
        self.transcript.append((c, r))
        return r

    def end(self, how):
        """"RCPT": QUIT after the RCPTs; "RSET": RSET, then QUIT; "DATA":
        start the content and drop the connection (no final dot)."""
        try:
            if how == "DATA":
                if self.cmd("DATA").startswith("354"):
                    self.s.sendall(b"Subject: never finished\r\n\r\n"
                                   b"some text\r\n")
                    self.transcript.append(("<partial content>", ""))
            else:
                if how == "RSET":
                    self.cmd("RSET")
                self.cmd("QUIT")
        finally:
            self.close()
        return self.transcript

    def close(self):
        self.f.close()
        self.s.close()

class SwaksResult:
    def __init__(self, args, proc):
        self.args = args
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr

    @property
    def accepted(self):
        """The message was queued by Postfix (250 after the final dot)."""
        return self.rc == 0 and re.search(r"<- +250 .*queued as", self.out) is not None

    def replies(self, code):
        """Server reply lines starting with `code` (e.g. "450")."""
        return [l for l in self.out.splitlines()
                if re.match(r"^<\*\* +%s[ -]" % code, l) or
                re.match(r"^<- +%s[ -]" % code, l)]

    def __repr__(self):
        return "swaks %s -> rc=%d\n%s" % (" ".join(self.args), self.rc, self.out)


class Postfix:
    """One private Postfix instance plus its smtp-sink."""

    def __init__(self, base=None):
        if base is None:
            base = tempfile.mkdtemp(prefix=BASE_PREFIX)
        self.base = base
        os.chmod(self.base, 0o755)
        self.etc = os.path.join(base, "etc")
        self.spool = os.path.join(base, "spool")
        self.data = os.path.join(base, "data")
        self.maillog_path = os.path.join(base, "maillog")
        self.sink_dir = os.path.join(base, "sink")
        self.policy_link = os.path.join(base, "policy.sock")
        self.milter_link = os.path.join(base, "milter.sock")
        self.port = free_port()
        self.sink_port = free_port()
        while self.sink_port == self.port:
            self.sink_port = free_port()
        self.bounce_port = free_port()
        self.dead_port = free_port()
        self.sink = None
        self.bounce_sink = None
        self.sink_out = None
        self.users = {}
        self.started = False

    # ---- set-up -----------------------------------------------------
    def _write(self, name, text, mode=0o644):
        path = os.path.join(self.etc, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def configure(self):
        pw = pwd.getpwnam("postfix")
        for d in (self.etc, os.path.join(self.etc, "sasl"), self.spool,
                  self.data, self.sink_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.chown(self.data, pw.pw_uid, pw.pw_gid)
        os.chown(self.sink_dir, pw.pw_uid, pw.pw_gid)
        self._write("main.cf", MAIN_CF.format(
            d=self.base, sink_port=self.sink_port, sock=self.policy_link,
            milter=self.milter_link,
            realm=REALM, rejected=REJECTED_RCPT))
        self._write("master.cf", MASTER_CF.format(port=self.port))
        self._write("transport",
                    "%s smtp:[127.0.0.1]:%d\n%s smtp:[127.0.0.1]:%d\n" % (
                        BOUNCE_DOMAIN, self.bounce_port, STUCK_DOMAIN,
                        self.dead_port))
        self._write("recipient_access",
                    "%s REJECT 5.1.1 test: no such user here\n" % REJECTED_RCPT)
        self._write("sasl/smtpd.conf",
                    "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
                    "mech_list: PLAIN LOGIN\nsasldb_path: %s\n" %
                    os.path.join(self.etc, "sasldb2"))

    def add_user(self, user, password="secret"):
        """A SASL login `user@test.example` (as Postfix reports it)."""
        login = "%s@%s" % (user, REALM)
        if login in self.users:
            return login
        db = os.path.join(self.etc, "sasldb2")
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", db, "-u", REALM,
                        user], input=password + "\n", text=True, check=True)
        pw = pwd.getpwnam("postfix")
        os.chown(db, pw.pw_uid, pw.pw_gid)
        os.chmod(db, 0o600)
        self.users[login] = password
        return login

    @staticmethod
    def _relink(link, path):
        tmp = link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(path, tmp)
        os.rename(tmp, link)

    def use_policy_socket(self, path):
        """Point Postfix's check_policy_service at `path` (atomically)."""
        self._relink(self.policy_link, path)

    def use_milter_socket(self, path):
        """Point smtpd_milters at `path` (atomically)."""
        self._relink(self.milter_link, path)

    def start(self, timeout=HANG):
        self.configure()
        _register_config_dir(self.etc, add=True)
        self.started = True
        self.sink_out = open(os.path.join(self.base, "sink.out"), "wb")
        # -u is required as root; -d dumps every transaction to a file.
        self.sink = subprocess.Popen(
            ["smtp-sink", "-u", "postfix", "-d",
             os.path.join(self.sink_dir, "msg-%H%M%S-"),
             "127.0.0.1:%d" % self.sink_port, "100"],
            stdout=self.sink_out, stderr=subprocess.STDOUT)
        self.bounce_sink = subprocess.Popen(
            ["smtp-sink", "-u", "postfix", "-f", "RCPT", "-B",
             "550 5.1.1 Recipient address rejected: User unknown",
             "127.0.0.1:%d" % self.bounce_port, "100"],
            stdout=self.sink_out, stderr=subprocess.STDOUT)
        r = subprocess.run(["postfix", "-c", self.etc, "start"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            # Postfix reports start-up errors to its log; run it on a pty to
            # see the fatal line if the log is empty.
            raise RuntimeError("postfix start failed (%d): %s%s\n%s" % (
                r.returncode, r.stdout, r.stderr, self.maillog()))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._banner(self.port) and self._banner(self.sink_port):
                return self
            time.sleep(0.1)
        raise RuntimeError("postfix did not come up:\n" + self.maillog())

    @staticmethod
    def _banner(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                data = s.recv(512)
                s.sendall(b"QUIT\r\n")
                return data.startswith(b"220")
        except OSError:
            return False

    def master_pid(self):
        try:
            with open(os.path.join(self.spool, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        if not self.started:
            return
        pid = self.master_pid()
        subprocess.run(["postfix", "-c", self.etc, "stop"],
                       capture_output=True, text=True)
        if pid:
            deadline = time.time() + 15
            while time.time() < deadline and _pid_alive(pid):
                time.sleep(0.1)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for sink in (self.sink, self.bounce_sink):
            if sink is not None and sink.poll() is None:
                sink.terminate()
                try:
                    sink.wait(5)
                except subprocess.TimeoutExpired:
                    sink.kill()
                    sink.wait()
        self.sink = self.bounce_sink = None
        if self.sink_out:
            self.sink_out.close()
            self.sink_out = None
        _register_config_dir(self.etc, add=False)
        self.started = False

    def cleanup(self):
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- clients ----------------------------------------------------
    def swaks(self, to, user=None, password=None, sender=None,
              quit_after=None, body=None, extra=(), timeout=HANG):
        """Send one message through Postfix with swaks.

        `to` is one address or a list; `user` a SASL login (AUTH PLAIN) or
        None for an unauthenticated client."""
        if isinstance(to, (list, tuple)):
            to = ",".join(to)
        args = ["--server", "127.0.0.1:%d" % self.port, "--to", to,
                "--helo", "client.%s" % REALM, "--timeout", "30"]
        if user:
            args += ["--auth", "PLAIN", "--auth-user", user,
                     "--auth-password", password or self.users.get(user, "secret")]
        args += ["--from", sender or user or "anon@%s" % REALM]
        if quit_after:
            args += ["--quit-after", quit_after]
        if body is not None:
            args += ["--body", body]
        args += list(extra)
        p = subprocess.run(["swaks"] + args, capture_output=True, text=True,
                           timeout=timeout)
        return SwaksResult(args, p)

    def abort_in_data(self, to, user=None, password=None, sender=None):
        """Start a message and drop the connection in the middle of the
        DATA content (no final dot): a message that never reaches
        END-OF-MESSAGE. Returns the transcript (list of (sent, reply))."""
        t = self.open_transaction(to, user, password, sender)
        return t.end("DATA")

    def open_transaction(self, to, user=None, password=None, sender=None):
        """An SMTP session left open after its RCPTs (the transaction in
        progress); end it with .end("RCPT") (QUIT), .end("RSET") (RSET,
        then QUIT) or .end("DATA") (drop inside the content)."""
        return HeldTransaction(self, to, user, password, sender)

    def smtp_source(self, messages, sender="source@client.example",
                    to="dest@example.org", recipients=1, sessions=1,
                    length=100, timeout=HANG):
        """Run Postfix's smtp-source against the instance (no SASL).
        -A: keep going when the server answers 4xx/5xx."""
        args = ["smtp-source", "-A", "-4", "-m", str(messages),
                "-s", str(sessions), "-r", str(recipients), "-l", str(length),
                "-f", sender, "-t", to, "-M", "client.%s" % REALM,
                "127.0.0.1:%d" % self.port]
        return subprocess.run(args, capture_output=True, text=True,
                              timeout=timeout)

    def sendmail_command(self):
        """A notify.sendmail command line that submits through this
        instance (its pickup service)."""
        return "/usr/sbin/sendmail -C %s -t -i" % self.etc

    def queue(self):
        """The queue as a list of postqueue -j records (dicts)."""
        r = subprocess.run(["postqueue", "-c", self.etc, "-j"],
                           capture_output=True, text=True, check=True)
        return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]

    def flush(self):
        subprocess.run(["postqueue", "-c", self.etc, "-f"],
                       capture_output=True, text=True)

    def delete_queue(self):
        subprocess.run(["postsuper", "-c", self.etc, "-d", "ALL"],
                       capture_output=True, text=True)

    # ---- what happened ----------------------------------------------
    def maillog(self):
        try:
            with open(self.maillog_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def sink_files(self):
        return sorted(glob.glob(os.path.join(self.sink_dir, "msg-*")))

    def delivered(self):
        """Messages that reached smtp-sink: list of (path, text)."""
        out = []
        for p in self.sink_files():
            try:
                with open(p, errors="replace") as f:
                    out.append((p, f.read()))
            except FileNotFoundError:
                pass
        return out

    def delivered_with(self, marker):
        return [t for _, t in self.delivered() if marker in t]

    def wait_delivered(self, marker, count, timeout=HANG):
        """Wait until `count` sink messages contain `marker`; return them."""
        deadline = time.time() + timeout
        while True:
            got = self.delivered_with(marker)
            if len(got) >= count or time.time() > deadline:
                return got
            time.sleep(0.2)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child would still answer; master is not our child.
    return True


def running(users, tools=("postfix", "smtp-sink", "smtp-source", "swaks",
                          "saslpasswd2")):
    """Generator for a module-scoped pytest fixture: a started instance with
    `users` in its sasldb, stopped (and its directory removed unless
    CHOKEPOINT_KEEP_TMP is set) afterwards. Skips without root or tools."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    p = Postfix()
    try:
        p.start()
        for u in users:
            p.add_user(u)
        yield p
    finally:
        p.stop()
        if not os.environ.get("CHOKEPOINT_KEEP_TMP"):
            p.cleanup()
