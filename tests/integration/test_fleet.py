"""Fleet mode: several chokepointd share their accounts in one real
redis-server (Debian's), started by each test on a loopback port and
stopped by its PID.

What an operator running two smarthosts behind a balancer relies on:
one limit over both hosts to the message, a block made on one host
refusing on the other at once, a person's command working from either
host, and Postfix never seeing an error when Redis goes away (decisions
from the local copy, handed over when it is back).
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from cpd import (CHOKEPOINT, CHOKEPOINTD, Daemon, PolicyClient, rcpt_request,
                 wait_for)
from postfix import free_port
from test_postfix import DETECTION_CLASSES, content_section

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed "
                                       "(scripts/deps.sh installs it)")

LIMITED = """
classes:
  residential:
    limits:
      - { metric: messages, window: %s, max: %d }
  unauthenticated:
    limits:
      - { metric: messages, window: 1h, max: 100 }
"""


class Redis:
    """A private redis-server on 127.0.0.1, no persistence."""

    def __init__(self, tmpdir, port=None, password=None, persist=False,
                 tls=None):
        self.dir = str(tmpdir)
        self.port = port or free_port()
        self.password = password
        self.persist = persist  # an append-only file, fsync'd every write
        self.tls = tls  # make_tls(): TLS only, a client certificate asked
        self.proc = None

    def port_args(self):
        if not self.tls:
            return ["--port", str(self.port)]
        return ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", self.tls["redis.crt"],
                "--tls-key-file", self.tls["redis.key"],
                "--tls-ca-cert-file", self.tls["ca.crt"]]

    def start(self):
        args = ["redis-server"] + self.port_args() + [
                "--bind", "127.0.0.1", "--save", "", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log")]
        args += (["--appendonly", "yes", "--appendfsync", "always"]
                 if self.persist else ["--appendonly", "no"])
        args += ["--enable-debug-command", "local"]  # DEBUG SLEEP
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.up("redis-server")
        return self

    def up(self, what):
        """Wait until it answers PING; if it exits first, fail at once
        with the end of its log (a port taken, a bad argument)."""
        def pong():
            if self.proc.poll() is not None:
                try:
                    with open(os.path.join(self.dir, "redis.log")) as f:
                        tail = f.read()[-600:]
                except OSError:
                    tail = "(no log)"
                raise AssertionError("%s on port %d exited %d:\n%s" % (
                    what, self.port, self.proc.returncode, tail))
            return self.cli("PING") == "PONG"
        wait_for(pong, what, timeout=20)

    def cli(self, *args):
        cmd = ["redis-cli", "-p", str(self.port), "--no-auth-warning"]
        if self.tls:
            cmd += ["--tls", "--cacert", self.tls["ca.crt"], "--cert",
                    self.tls["client.crt"], "--key", self.tls["client.key"]]
        if self.password:
            cmd += ["-a", self.password]
        # (errors: the habits are binary records, "cph:{...}")
        r = subprocess.run(cmd + list(args), capture_output=True, text=True,
                           errors="replace", timeout=20)
        return r.stdout.strip()

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def url(self):
        return "%s://127.0.0.1:%d" % ("rediss" if self.tls else "redis",
                                      self.port)

    def tls_store(self):
        """The store settings a daemon needs for this server's TLS."""
        if not self.tls:
            return ""
        return ("redis_tls_ca: %s\nredis_tls_cert: %s\nredis_tls_key: %s\n" %
                (self.tls["ca.crt"], self.tls["client.crt"],
                 self.tls["client.key"]))


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def fleet_daemon(tmp_path, name, redis_url, max_msgs=10, extra_store="",
                 window="1h"):
    # (a decision waits up to 1 s for Redis, not 50 ms: on a busy test
    # machine a stall would make it local, and the counts inexact)
    store = ("checkpoint_interval: 1s\nbackend: redis\nredis: %s\n"
             "redis_timeout: 1s\n" % redis_url) + extra_store
    return Daemon(tmp_path / name, classes=LIMITED % (window, max_msgs),
                  extra={"store": store, "daemon": "log_level: info"})


@pytest.fixture
def two(tmp_path, redis):
    a = fleet_daemon(tmp_path, "a", redis.url()).start()
    b = fleet_daemon(tmp_path, "b", redis.url()).start()
    connected(a, b)
    yield a, b
    stop_clean(a, b)


def numbered_hosts(tmp_path, redis, max_msgs=10):
    """Two daemons on one Redis, hosts 1 and 2 of the fleet
    (store.fleet_host), connected."""
    a = fleet_daemon(tmp_path, "a", redis.url(), max_msgs=max_msgs,
                     extra_store="fleet_host: 1\n").start()
    b = fleet_daemon(tmp_path, "b", redis.url(), max_msgs=max_msgs,
                     extra_store="fleet_host: 2\n").start()
    connected(a, b)
    return a, b


def connected(*daemons):
    """Wait until each daemon is connected to its fleet store."""
    for d in daemons:
        wait_for(lambda d=d: d.ctl("status")["fleet"]["connected"] == 1,
                 "fleet connected", timeout=30)


def stop_clean(*daemons):
    """Stop each daemon; each must exit 0 (under the sanitizers: no leak,
    no error at exit)."""
    for d in daemons:
        rc = d.stop()
        assert rc in (0, None), "exit %s:\n%s" % (rc, d.read_log()[-3000:])


class Load:
    """Postfix's side: one policy connection sending messages of `user`
    back to back, in a thread, until stop(); every reply kept. A message
    is one RCPT, or with `eom` RCPT and END-OF-MESSAGE (two-phase: the
    RCPT reserves, the END-OF-MESSAGE settles)."""

    def __init__(self, d, user, pause=0.0, eom=False):
        self.replies, self.done = [], threading.Event()
        self.d, self.user, self.pause, self.eom = d, user, pause, eom
        self.messages = 0
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        c = PolicyClient(self.d.policy_sock, timeout=20)
        i = 0
        while not self.done.is_set():
            inst = "%s%d" % (self.user, i)
            self.replies.append(c.ask(rcpt_request(user=self.user,
                                                   instance=inst)))
            if self.eom:
                self.replies.append(c.ask(rcpt_request(
                    user=self.user, instance=inst, state="END-OF-MESSAGE",
                    queue_id="", recipient_count="1", size="100",
                    recipient="")))
            self.messages += 1
            i += 1
            time.sleep(self.pause)

    def stop(self):
        self.done.set()
        self.t.join(timeout=60)
        return self.replies

    def finish(self, more=50):
        """Wait for `more` answers, stop, and check Postfix saw no error:
        every request answered, and accepted."""
        n = len(self.replies)
        wait_for(lambda: len(self.replies) > n + more, "answers after",
                 timeout=60)
        self.stop()
        assert all(action(r) == "DUNNO" for r in self.replies), \
            [r for r in self.replies if action(r) != "DUNNO"][:3]


def shared_level(r, user, slot):
    """The level of counter `slot` of `user`'s account in Redis `r`."""
    return float(r.cli("HGET", "cp:{u:%s}" % user, "s:" + slot) or "0")


def action(reply):
    return reply.split("\n")[0].split(" ")[0].replace("action=", "")


def test_two_hosts_share_one_limit_to_the_message(two):
    a, b = two
    ca = PolicyClient(a.policy_sock, timeout=20)
    cb = PolicyClient(b.policy_sock, timeout=20)
    got = []
    for i in range(14):  # alternately, as a balancer spreads them
        c = ca if i % 2 == 0 else cb
        got.append(action(c.ask(rcpt_request(user="z@example.net",
                                             instance="m%d" % i))))
    # 10 messages an hour over both hosts: the 11th is deferred on either
    assert got[:10] == ["DUNNO"] * 10, got
    assert got[10:] == ["DEFER_IF_PERMIT"] * 4, got
    sa, sb = a.ctl("status")["fleet"], b.ctl("status")["fleet"]
    assert sa["answered"] == 7 and sb["answered"] == 7
    assert sa["local"] == 0 and sb["local"] == 0


def test_a_block_on_one_host_refuses_on_the_other(two):
    a, b = two
    cb = PolicyClient(b.policy_sock, timeout=20)
    assert action(cb.ask(rcpt_request(user="v@example.net",
                                      instance="v1"))) == "DUNNO"
    a.ctl("block", "u:v@example.net", "--note", "spam complaint 4711")
    # at once: the next request on the other host is refused
    r = cb.ask(rcpt_request(user="v@example.net", instance="v2"))
    assert action(r) in ("REJECT", "HOLD"), r
    # a person's command works from any host: show, then release on b
    assert b.ctl("show", "u:v@example.net")["state"] == "MANUAL_HOLD"
    b.ctl("release", "u:v@example.net", "--note", "customer cleaned the PC")
    assert a.ctl("show", "u:v@example.net")["state"] == "PROBATION"
    ca = PolicyClient(a.policy_sock, timeout=20)
    assert action(ca.ask(rcpt_request(user="v@example.net",
                                      instance="v3"))) != "REJECT"


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_redis_restart_under_load_no_error_to_postfix(tmp_path, tls):
    """(tls: the same through the TLS relay, whose connections end with
    the server's and are made again through it)"""
    # as Redis runs in production: it keeps its data across a restart
    redis = Redis(tmp_path, persist=True,
                  tls=make_tls(tmp_path / "tls") if tls else None).start()
    # a week's window: the level leaks 0.17 a second, so the shared level
    # is the count of messages reserved, give or take one
    a = fleet_daemon(tmp_path, "a", redis.url(), max_msgs=100000,
                     window="1w", extra_store=redis.tls_store()).start()
    b = fleet_daemon(tmp_path, "b", redis.url(), max_msgs=100000,
                     window="1w", extra_store=redis.tls_store()).start()
    try:
        connected(a, b)
        # whole messages: a reservation made in Redis and settled while it
        # is down, or made and settled while it is down, counts once
        load = Load(a, "w@example.net", eom=True)
        replies = load.replies
        wait_for(lambda: len(replies) > 50, "load", timeout=60)
        redis.stop(signal.SIGKILL)
        n0 = len(replies)
        wait_for(lambda: len(replies) > n0 + 100, "answers with Redis down",
                 timeout=60)
        # a block made while Redis is down is handed over when it is back
        a.ctl("block", "u:s@example.net", "--create", "--note", "abuse report")
        redis.start()
        wait_for(lambda: a.ctl("status")["fleet"]["connected"] == 1,
                 "reconnected", timeout=60)
        load.finish()  # 0 errors to Postfix
        st = a.ctl("status")["fleet"]
        assert st["local"] >= 100 and st["disconnects"] >= 1, st
        assert st["merged"] >= 1 and st["merged_changes"] >= 1
        # the local charges are in the shared counter: every message a
        # reserved, whether Redis answered or a decided alone (without the
        # hand-over the shared level would lack st["local"] of them)
        level = shared_level(redis, "w@example.net", "messages/1w")
        assert load.messages - st["failed"] - 5 <= level <= load.messages, \
            (level, load.messages, st)
        assert level >= 100 + 50 - 1
        # and the block: the other host refuses
        cb = PolicyClient(b.policy_sock, timeout=20)
        r = cb.ask(rcpt_request(user="s@example.net", instance="s1"))
        assert action(r) in ("REJECT", "HOLD"), r
        assert "deciding from the local copy" in a.read_log()
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()
        redis.stop()


def test_redis_restarted_empty_gets_the_blocks_back(tmp_path, redis):
    a = fleet_daemon(tmp_path, "a", redis.url()).start()
    b = fleet_daemon(tmp_path, "b", redis.url()).start()
    try:
        connected(a, b)
        a.ctl("block", "u:e@example.net", "--create", "--note", "zombie")
        redis.stop(signal.SIGKILL)  # no persistence: its data is gone
        redis.start()
        for d in (a, b):
            wait_for(lambda d=d: d.ctl("status")["fleet"]["connects"] >= 2,
                     "reconnected", timeout=60)
        wait_for(lambda: a.ctl("status")["fleet"]["merged_changes"] >= 1,
                 "the block handed over", timeout=60)
        # a hands the block to the empty Redis: b refuses, never having
        # seen the account
        cb = PolicyClient(b.policy_sock, timeout=20)
        r = cb.ask(rcpt_request(user="e@example.net", instance="e1"))
        assert action(r) in ("REJECT", "HOLD"), r
        assert "Redis has no fleet data" in a.read_log()
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


def test_no_redis_at_start_answers_from_the_local_copy(tmp_path):
    # nothing listens there: the daemon starts, answers, and says why
    a = fleet_daemon(tmp_path, "a", "redis://127.0.0.1:%d" % free_port(),
                     max_msgs=2).start()
    try:
        c = PolicyClient(a.policy_sock, timeout=20)
        got = [action(c.ask(rcpt_request(user="q@example.net",
                                         instance="q%d" % i)))
               for i in range(3)]
        assert got == ["DUNNO", "DUNNO", "DEFER_IF_PERMIT"]  # same limits
        st = a.ctl("status")["fleet"]
        assert st["connected"] == 0 and st["local"] == 3
        assert st["owed"] == 1
        wait_for(lambda: "cannot connect" in a.read_log(), "logged",
                 timeout=20)
        stop_clean(a)
    finally:
        a.stop()


def test_password_and_database(tmp_path):
    r = Redis(tmp_path, password="s3cret-pass%word").start()
    try:
        url = "redis://:s3cret-pass%%25word@127.0.0.1:%d/5" % r.port
        a = fleet_daemon(tmp_path, "a", url).start()
        try:
            connected(a)  # (with AUTH)
            c = PolicyClient(a.policy_sock, timeout=20)
            assert action(c.ask(rcpt_request(user="p@example.net",
                                             instance="p1"))) == "DUNNO"
            assert r.cli("-n", "5", "EXISTS", "cp:{u:p@example.net}") == "1"
            assert "s3cret" not in a.read_log()
            stop_clean(a)
        finally:
            a.stop()
        bad = fleet_daemon(tmp_path, "bad",
                           "redis://:wrong@127.0.0.1:%d" % r.port).start()
        try:
            wait_for(lambda: "set-up refused" in bad.read_log(),
                     "AUTH refused", timeout=20)
            c = PolicyClient(bad.policy_sock, timeout=20)
            assert action(c.ask(rcpt_request(user="p@example.net",
                                             instance="p2"))) == "DUNNO"
            assert bad.ctl("status")["fleet"]["connected"] == 0
            stop_clean(bad)
        finally:
            bad.stop()
    finally:
        r.stop()


@pytest.mark.parametrize("store,want", [
    ("backend: redis\n", "store.backend: redis needs store.redis"),
    ("backend: redis\nredis: rediss://10.0.0.1:6380\n"
     "redis_tls_ca: /nonexistent/ca.pem\n",
     "store.redis_tls_ca: /nonexistent/ca.pem: cannot open"),
    ("backend: redis\nredis: redis://10.0.0.1:6380\n"
     "redis_tls_ca: /etc/ssl/certs/ca-certificates.crt\n",
     "only for a Redis reached over TLS"),
    ("backend: redis\nredis_cluster: [rediss://10.0.0.1:7000, "
     "redis://10.0.0.2:7000]\n", "give every server as rediss://"),
    ("backend: redis\nredis: rediss://10.0.0.1:6380\n"
     "redis_tls_cert: /etc/ssl/certs/ca-certificates.crt\n",
     "go together"),
    ("backend: redis\nredis: redis://10.0.0.1:99999\n",
     "port is not a number from 1 to 65535"),
    ("backend: redis\nredis: http://10.0.0.1\n", "expected redis://"),
    ("backend: memcached\n", "memcached"),
    ("backend: redis\nredis_sentinels: [redis://10.0.0.5:26379]\n",
     "store.redis_sentinels and store.redis_master go together"),
    ("backend: redis\nredis_sentinels: [redis://:pw@10.0.0.5:26379]\n"
     "redis_master: p\nredis_sentinel_password_file: /etc/hostname\n",
     "has a password already"),
    ("backend: redis\nredis: redis://10.0.0.1\n"
     "redis_sentinel_password_file: /etc/hostname\n",
     "there are no store.redis_sentinels"),
    ("backend: redis\nredis: redis://10.0.0.1\n"
     "redis_cluster: [redis://10.0.0.1:7000]\n", "give one of"),
    ("backend: redis\nredis_cluster: [redis://10.0.0.1:7000/2]\n",
     "no database number"),
])
def test_check_refuses_bad_redis_settings(tmp_path, store, want):
    d = Daemon(tmp_path, extra={"store": store})
    r = subprocess.run([CHOKEPOINTD, "--check", "-c", d.config],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout
    assert want in r.stderr and d.config in r.stderr, r.stderr


def test_check_names_the_fleet_store_and_guards_the_password_file(tmp_path):
    pw = tmp_path / "redis.pass"
    pw.write_text("hunter2-hunter2\n")
    os.chmod(pw, 0o644)
    d = Daemon(tmp_path, extra={"store": "backend: redis\nredis: "
                                "redis://10.1.2.3:6390\nredis_password_file:"
                                " %s\n" % pw})
    r = subprocess.run([CHOKEPOINTD, "--check", "-c", d.config],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "readable or writable by every user" \
        in r.stderr, r.stderr
    os.chmod(pw, 0o640)
    r = subprocess.run([CHOKEPOINTD, "--check", "-c", d.config],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "fleet store redis at 10.1.2.3:6390" in r.stdout
    for store, says in (
            ("redis_cluster: [redis://10.0.0.1:7000, redis://10.0.0.2:7000]",
             "a Cluster with 2 seeds (10.0.0.1:7000, ...)"),
            ("redis_sentinels: [redis://10.0.0.5:26379]\n"
             "redis_master: prim", "primary 'prim' of 1 Sentinels "
             "(10.0.0.5:26379)")):
        d = Daemon(tmp_path / str(len(says)),
                   extra={"store": "backend: redis\n" + store})
        r = subprocess.run([CHOKEPOINTD, "--check", "-c", d.config],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and says in r.stdout, r.stdout + r.stderr


def test_fleet_status_and_show_match_their_schemas(two):
    from test_json_schema import ctl_raw, validate
    a, b = two
    c = PolicyClient(a.policy_sock, timeout=20)
    c.ask(rcpt_request(user="j@example.net", instance="j1"))
    for d in (a, b):
        for args in (("status",), ("show", "u:j@example.net")):
            rc, raw = ctl_raw(d, *args)
            assert rc == 0, raw
            validate(raw, " ".join(args))


class Cluster:
    """A local Redis Cluster: `n` redis-server in cluster mode on loopback
    ports, no replicas, created with redis-cli --cluster create."""

    def __init__(self, tmpdir, n=3, tls=None):
        self.nodes = []
        self.tls = tls  # make_tls(): every node and the bus over TLS
        for i in range(n):
            d = os.path.join(str(tmpdir), "node%d" % i)
            os.makedirs(d)
            self.nodes.append(Redis(d, tls=tls))

    def start(self):
        for r in self.nodes:
            tls = ["--tls-cluster", "yes"] if self.tls else []
            r.proc = subprocess.Popen(
                ["redis-server"] + r.port_args() + tls + ["--bind",
                 "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes",
                 "--cluster-port", str(free_port()), "--cluster-config-file",
                 os.path.join(r.dir, "nodes.conf"), "--dir", r.dir,
                 "--logfile", os.path.join(r.dir, "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for r in self.nodes:
            r.up("cluster node")
        tls = []
        if self.tls:
            t = self.tls
            tls = ["--tls", "--cacert", t["ca.crt"], "--cert",
                   t["client.crt"], "--key", t["client.key"]]
        out = subprocess.run(
            ["redis-cli"] + tls + ["--cluster", "create"] +
            ["127.0.0.1:%d" % r.port for r in self.nodes] +
            ["--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        for r in self.nodes:
            wait_for(lambda r=r: "cluster_state:ok" in r.cli("CLUSTER",
                                                              "INFO"),
                     "cluster state ok", timeout=60)
        return self

    def stop(self):
        for r in self.nodes:
            r.stop()

    def seeds(self):
        return "[%s]" % ", ".join(
            "%s://127.0.0.1:%d" % ("rediss" if self.tls else "redis", r.port)
            for r in self.nodes[:2])

    def node_of(self, key):
        """The node that serves `key`'s slot, and the slot."""
        slot = int(self.nodes[0].cli("CLUSTER", "KEYSLOT", key))
        for r in self.nodes:
            for line in r.cli("CLUSTER", "NODES").splitlines():
                f = line.split()
                if "myself" not in f[2]:
                    continue
                for rng in f[8:]:
                    a, _, b = rng.partition("-")
                    if a.isdigit() and int(a) <= slot <= int(b or a):
                        return r, slot
        raise AssertionError("no node serves slot %d" % slot)

    def move_slot(self, slot, src, dst):
        """Migrate one slot and its keys from src to dst, as a resharding
        does, and tell every node."""
        sid, did = src.cli("CLUSTER", "MYID"), dst.cli("CLUSTER", "MYID")
        dst.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", sid)
        src.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", did)
        keys = src.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "1000").split()
        if keys:
            src.cli("MIGRATE", "127.0.0.1", str(dst.port), "", "0", "5000",
                    "KEYS", *keys)
        for r in self.nodes:
            r.cli("CLUSTER", "SETSLOT", str(slot), "NODE", did)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()  # by PID, also when it did not come up


def cluster_daemon(tmp_path, name, cluster, max_msgs=10):
    return Daemon(tmp_path / name, classes=LIMITED % ("1h", max_msgs),
                  extra={"store": "checkpoint_interval: 1s\nbackend: redis\n"
                                  "redis_cluster: %s\n" % cluster.seeds(),
                         "daemon": "log_level: info",
                         "accounting": "reservation_timeout: 10m"})


def cluster_shares_limits(a, b, cluster):
    """Daemons a and b on `cluster`, connected: accounts on several of its
    nodes, their messages alternating between the hosts, meet one limit
    (10) to the message; a block on a refuses on b at once; every decision
    of a was the cluster's (none local, none failed). The users."""
    connected(a, b)
    users = ["c%d@example.net" % i for i in range(6)]
    # the accounts live on more than one node
    assert len({cluster.node_of("cp:{u:%s}" % u)[0].port
                for u in users}) >= 2
    ca = PolicyClient(a.policy_sock, timeout=20)
    cb = PolicyClient(b.policy_sock, timeout=20)
    for u in users:
        got = [action((ca if i % 2 == 0 else cb).ask(
            rcpt_request(user=u, instance="%s-%d" % (u, i))))
            for i in range(12)]
        assert got == ["DUNNO"] * 10 + ["DEFER_IF_PERMIT"] * 2, (u, got)
    a.ctl("block", "u:%s" % users[0], "--note", "zombie")
    r = cb.ask(rcpt_request(user=users[0], instance="x"))
    assert action(r) in ("REJECT", "HOLD"), r
    st = a.ctl("status")["fleet"]
    assert st["local"] == 0 and st["failed"] == 0, st
    return users


def test_a_cluster_answers_as_one_server(tmp_path, cluster):
    a = cluster_daemon(tmp_path, "a", cluster).start()
    b = cluster_daemon(tmp_path, "b", cluster).start()
    try:
        users = cluster_shares_limits(a, b, cluster)
        assert b.ctl("show", "u:%s" % users[0])["state"] == "MANUAL_HOLD"
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


def test_a_cluster_slot_moved_under_the_daemon(tmp_path, cluster):
    a = cluster_daemon(tmp_path, "a", cluster, max_msgs=6).start()
    try:
        connected(a)
        c = PolicyClient(a.policy_sock, timeout=20)
        user = "mover@example.net"
        got = [action(c.ask(rcpt_request(user=user, instance="m%d" % i)))
               for i in range(3)]
        src, slot = cluster.node_of("cp:{u:%s}" % user)
        dst = next(r for r in cluster.nodes if r is not src)
        cluster.move_slot(slot, src, dst)
        # the daemon's map is stale: MOVED, followed; the count goes on
        got += [action(c.ask(rcpt_request(user=user, instance="n%d" % i)))
                for i in range(5)]
        assert got == ["DUNNO"] * 6 + ["DEFER_IF_PERMIT"] * 2, got
        st = a.ctl("status")["fleet"]
        assert st["redirects"] >= 1 and st["local"] == 0, st
        stop_clean(a)
    finally:
        a.stop()


class Sentinel:
    """One Sentinel (redis-server --sentinel) on loopback watching
    `master` as "prim", over TLS if the master speaks it; with `failover`,
    one that gives up on a silent primary within a second. Started at
    once, stopped by its PID."""

    def __init__(self, tmp_path, master, failover=False, password=None):
        self.master = master
        self.probe = Redis(tmp_path, tls=master.tls,
                           password=password)  # (its cli)
        self.port = self.probe.port
        t = master.tls
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            ("port 0\ntls-port %d\ntls-cert-file %s\ntls-key-file %s\n"
             "tls-ca-cert-file %s\ntls-replication yes\n" %
             (self.port, t["redis.crt"], t["redis.key"], t["ca.crt"])
             if t else "port %d\n" % self.port) +
            "bind 127.0.0.1\ndir %s\nsentinel monitor prim 127.0.0.1 %d 1\n"
            % (tmp_path, master.port) +
            ("sentinel down-after-milliseconds prim 1000\n"
             "sentinel failover-timeout prim 10000\n" if failover else "") +
            ("sentinel auth-pass prim %s\n" % master.password
             if master.password else "") +
            ("requirepass %s\n" % password if password else ""))
        self.proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def watching(self):
        """Wait until it names the primary."""
        wait_for(lambda: self.probe.cli(
            "SENTINEL", "get-master-addr-by-name", "prim").split() ==
            ["127.0.0.1", str(self.master.port)], "sentinel watching",
            timeout=30)

    def url(self):
        return self.probe.url()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_sentinel_failover_under_load(tmp_path, tls):
    """A primary, its replica and one Sentinel on loopback: the primary is
    killed under load; the Sentinel promotes the replica, chokepointd asks
    it where the primary is now and goes on: no error to Postfix, and the
    counts made before the failover are still there. (tls: all three
    speak TLS only, the replication too; the daemon reaches each through
    its relay.)"""
    os.makedirs(tmp_path / "m")
    os.makedirs(tmp_path / "r")
    t = make_tls(tmp_path / "tls") if tls else None
    master = Redis(tmp_path / "m", tls=t).start()
    replica = Redis(tmp_path / "r", tls=t)
    try:
        _failover(tmp_path, master, replica)
    finally:
        replica.stop()
        master.stop()


def _failover(tmp_path, master, replica):
    """test_sentinel_failover_under_load's body."""
    replica.proc = subprocess.Popen(
        ["redis-server"] + replica.port_args() + [
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", replica.dir, "--replicaof", "127.0.0.1", str(master.port)] +
        (["--tls-replication", "yes"] if replica.tls else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: "master_link_status:up" in replica.cli(
        "INFO", "replication"), "replica in sync", timeout=30)
    sentinel = Sentinel(tmp_path, master, failover=True)
    a = None
    try:
        sentinel.watching()
        a = Daemon(tmp_path / "a", classes=LIMITED % ("1w", 100000), extra={
            "store": "checkpoint_interval: 1s\nbackend: redis\n"
                     "redis_sentinels: [%s]\n"
                     "redis_master: prim\n" % sentinel.url() +
                     master.tls_store(),
            "daemon": "log_level: info",
            "accounting": "reservation_timeout: 10m"}).start()
        connected(a)
        load = Load(a, "f@example.net", pause=0.002)
        replies = load.replies
        wait_for(lambda: len(replies) > 50, "load", timeout=60)
        master.stop(signal.SIGKILL)
        wait_for(lambda: "role:master" in replica.cli("INFO", "replication"),
                 "failover", timeout=60)
        wait_for(lambda: a.ctl("status")["fleet"]["connected"] == 1 and
                 a.ctl("status")["fleet"]["connects"] >= 2,
                 "connected to the new primary", timeout=60)
        load.finish()
        st = a.ctl("status")["fleet"]
        assert st["local"] >= 1 and st["disconnects"] >= 1, st
        # the new primary holds every message: replicated, answered after
        # the failover, or counted locally in the gap and handed over
        level = shared_level(replica, "f@example.net", "messages/1w")
        assert len(replies) - st["failed"] - 5 <= level <= len(replies), \
            (level, len(replies), st)
        assert "127.0.0.1:%d (prim): connected" % replica.port in \
            a.read_log()
        stop_clean(a)
    finally:
        if a is not None:
            a.stop()
        sentinel.stop()
        replica.stop()
        master.stop()


def test_a_block_holds_the_mail_queued_on_every_host(tmp_path, redis):
    """Each host holds its own queue's mail: a block made on one host puts
    the account's mail queued on another on hold there."""
    held = {}
    daemons = []
    for name in ("a", "b"):
        held[name] = tmp_path / ("held-%s.txt" % name)
        script = tmp_path / ("hold-%s.sh" % name)
        script.write_text("#!/bin/sh\ncat >> %s\n" % held[name])
        os.chmod(script, 0o755)
        d = Daemon(tmp_path / name, classes=LIMITED % ("1h", 100) +
                   "containment:\n  hold_command: %s\n" % script, extra={
                       "store": "checkpoint_interval: 1s\nbackend: redis\n"
                                "redis: %s\n" % redis.url(),
                       "daemon": "log_level: info"})
        daemons.append(d.start())
    a, b = daemons
    try:
        connected(*daemons)
        cb = PolicyClient(b.policy_sock, timeout=20)
        user = "h@example.net"
        assert action(cb.ask(rcpt_request(user=user, instance="h1"))) == \
            "DUNNO"
        assert action(cb.ask(rcpt_request(
            user=user, instance="h1", state="END-OF-MESSAGE",
            queue_id="4QB1HOLDME", recipient_count="1", size="100",
            recipient=""))) == "DUNNO"
        a.ctl("block", "u:" + user, "--note", "zombie")
        r = cb.ask(rcpt_request(user=user, instance="h2"))
        assert action(r) in ("REJECT", "HOLD"), r
        wait_for(lambda: held["b"].exists() and
                 "4QB1HOLDME" in held["b"].read_text(), "held on b",
                 timeout=30)
        assert "on another host of the fleet" in b.read_log()
        assert not held["a"].exists() or \
            "4QB1HOLDME" not in held["a"].read_text()
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


TWELVE = """
classes:
  residential:
    limits:
""" + "".join("      - { metric: %s, window: %s, max: 1000000 }\n" % (m, w)
              for m in ("messages", "recipients", "bytes")
              for w in ("1m", "1h", "1d", "1w"))


def test_long_keys_and_twelve_limits(tmp_path, redis):
    """The longest keys (a 200-character customer id, a long login) and a
    class with the most limits (12, every one given back at
    END-OF-MESSAGE): a decision's command is the largest it can be."""
    cust = "C" * 200
    login = "l" * 150 + "@example.net"
    d = Daemon(tmp_path / "a", classes=TWELVE + "  unauthenticated:\n"
               "    limits:\n      - { metric: messages, window: 1h, "
               "max: 100 }\n",
               customer_map="%s %s\n" % (login, cust), extra={
                   "store": "checkpoint_interval: 1s\nbackend: redis\n"
                            "redis: %s\n" % redis.url(),
                   "daemon": "log_level: info"}).start()
    try:
        connected(d)
        c = PolicyClient(d.policy_sock, timeout=20)
        for i in range(3):
            # SIZE= at RCPT: bytes are reserved too, so all 12 slots are
            # given back at END-OF-MESSAGE; the message is larger than
            # said, so Redis checks it (not settled here)
            assert action(c.ask(rcpt_request(user=login, instance="t%d" % i,
                                             size="5000"))) == "DUNNO"
            assert action(c.ask(rcpt_request(
                user=login, instance="t%d" % i, state="END-OF-MESSAGE",
                queue_id="", recipient_count="1", size="6000",
                recipient=""))) == "DUNNO"
        st = d.ctl("status")["fleet"]
        assert st["answered"] == 6 and st["local"] == 0, st
        assert redis.cli("EXISTS", "cp:{c:%s}" % cust) == "1"
        # the login's state: a record of its own, on its customer's slot
        d.ctl("block", "u:" + login, "--note", "long")
        assert redis.cli("HGET", "cp:{c:%s}u:%s" % (cust, login), "st") \
            == "4"  # MANUAL_HOLD
        assert d.ctl("show", "u:" + login)["state"] == "MANUAL_HOLD"
        stop_clean(d)
    finally:
        d.stop()


def test_reload_while_decisions_wait_for_redis(tmp_path, redis):
    """SIGHUP while a decision waits for a slow Redis: the decision is
    made and logged under the configuration it began with (kept until
    then), and the daemon goes on under the new one."""
    d = Daemon(tmp_path / "a", classes=LIMITED % ("1h", 100), extra={
        "store": "checkpoint_interval: 1s\nbackend: redis\nredis: %s\n"
                 "redis_timeout: 5s\n" % redis.url(),
        "daemon": "log_level: debug"}).start()
    try:
        connected(d)
        # asleep for less than store.redis_connect_timeout (1 s): slow,
        # not taken for dead
        slow = threading.Thread(target=redis.cli, args=("DEBUG", "SLEEP",
                                                        "0.8"))
        slow.start()
        time.sleep(0.2)  # Redis is asleep
        got = []
        t = threading.Thread(target=lambda: got.append(PolicyClient(
            d.policy_sock, timeout=20).ask(rcpt_request(user="r@example.net",
                                                        instance="r1"))))
        t.start()
        time.sleep(0.2)  # the decision waits
        d.reload()
        t.join(timeout=60)
        slow.join(timeout=60)
        assert got and action(got[0]) == "DUNNO", got
        st = d.ctl("status")["fleet"]
        assert st["answered"] >= 1 and st["local"] == 0, st
        c = PolicyClient(d.policy_sock, timeout=20)
        assert action(c.ask(rcpt_request(user="r@example.net",
                                         instance="r2"))) == "DUNNO"
        stop_clean(d)
    finally:
        d.stop()


def test_show_on_another_host_shows_the_shared_counters(two):
    a, b = two
    ca = PolicyClient(a.policy_sock, timeout=20)
    for i in range(3):
        ca.ask(rcpt_request(user="k@example.net", instance="k%d" % i))
    # b has never seen the account: its counters come from Redis
    counters = {c["rule"]: c for c in b.ctl("show", "u:k@example.net")[
        "counters"]}
    assert 2.9 < counters["messages/1h"]["value"] <= 3.0, counters
    assert abs(b.counter("u:k@example.net", "messages/1h") -
               a.counter("u:k@example.net", "messages/1h")) < 0.01


def _zombie_message(c, user, i):
    """One spam message as Postfix asks: a forged sender, six fresh
    recipients, then END-OF-MESSAGE. Returns the replies."""
    inst = "z%s%d" % (user, i)
    sender = "x%d@forged%d.example" % (i, i)
    out = []
    for r in range(6):
        out.append(c.ask(rcpt_request(
            user=user, sender=sender, instance=inst,
            recipient="v%d.%d@free%d.example" % (i, r, r))))
        if action(out[-1]) != "DUNNO":
            return out
    out.append(c.ask(rcpt_request(user=user, sender=sender, instance=inst,
                                  state="END-OF-MESSAGE", recipient="",
                                  recipient_count="6")))
    return out


def _messages_until_blocked(clients, user, limit=40):
    """Spam messages of `user` spread over `clients` in turn (the
    balancer), until one is refused by the account's block: how many."""
    for i in range(limit):
        replies = _zombie_message(clients[i % len(clients)], user, i)
        if any("5.7.1" in r and "blocked" in r for r in replies):
            return i + 1
    return None


def test_evidence_is_summed_over_the_fleet(tmp_path, redis):
    """A zombie whose mail the balancer spreads over two hosts is blocked
    after as many messages as on one host: the suspicion each host sees
    adds up in Redis (without it each host had half the evidence and
    needed about twice the messages). Its shared evidence is in Redis, a
    release on either host spends it there too, and `status` counts it."""
    a, b = numbered_hosts(tmp_path, redis, max_msgs=100000)
    try:
        ca = PolicyClient(a.policy_sock, timeout=20)
        cb = PolicyClient(b.policy_sock, timeout=20)
        one = _messages_until_blocked([ca], "solo@example.net")
        assert one is not None and one >= 3, one
        two_hosts = _messages_until_blocked([ca, cb], "spread@example.net")
        print("blocked after %d messages on one host, %d over two" %
              (one, two_hosts))
        assert two_hosts is not None and two_hosts <= one + 1, \
            (one, two_hosts)
        # both hosts know the block, and both hold the fleet's evidence
        for d in (a, b):
            acct = d.ctl("show", "u:spread@example.net")
            assert acct["state"] == "BLOCKED", acct["state"]
        sa = {s["signal"]: s for s in a.ctl("show", "u:spread@example.net")
              ["signals"]}
        sb = {s["signal"]: s for s in b.ctl("show", "u:spread@example.net")
              ["signals"]}
        # forged_sender fired on both hosts: each counts the fleet's times
        assert sa["forged_sender"]["times"] >= two_hosts - 1, sa
        assert sb["forged_sender"]["times"] >= two_hosts - 1, sb
        es = float(redis.cli("HGET", "cp:{u:spread@example.net}", "es"))
        assert es >= 8, es
        st = a.ctl("status")["fleet"]
        assert st["evidence_taken"] >= 1 and st["dropped"] == 0, st
        # a release is a fresh start everywhere: the fleet's evidence too
        b.ctl("release", "u:spread@example.net", "--note", "cleaned")
        assert redis.cli("HGET", "cp:{u:spread@example.net}", "es") == ""
        # ... on the other host too: a's own suspicion is spent when it
        # learns of the release, so its next messages do not block again
        for i in range(3):
            r = ca.ask(rcpt_request(user="spread@example.net",
                                    instance="ok%d" % i,
                                    sender="spread@example.net",
                                    recipient="friend@example.org"))
            assert action(r) == "DUNNO", (i, r)
        for d in (a, b):
            assert d.ctl("show", "u:spread@example.net")["state"] == \
                "PROBATION"
    finally:
        stop_clean(a, b)


def _office_mail(clients, user, n=60, contacts=400):
    """A small office's shared login: three people (each with a PC of
    its own, one at home), each sending as themselves, one to three
    recipients of the office's address book of `contacts` (each new the
    first time), spread over `clients` in turn. Returns every reply."""
    people = [("anna@", "anna-pc", "198.51.100.7"),
              ("ben.home@freemail.example", "ben-laptop", "203.0.113.40"),
              ("cleo@", "cleo-pc", "198.51.100.7")]
    dom = user.split("@")[1]
    replies = []
    for i in range(n):
        c = clients[i % len(clients)]
        who, helo, ip = people[(i // 2) % 3]
        sender = who + dom if who.endswith("@") else who
        inst = "o%s%d" % (user, i)
        rcpts = ["contact%d@partner%d.example" % ((i * 7 + k) % contacts,
                                                  ((i * 7 + k) % contacts) % 5)
                 for k in range(1 + i % 3)]
        for r in rcpts:
            replies.append(c.ask(rcpt_request(
                user=user, sender=sender, instance=inst, recipient=r,
                helo_name=helo, client=ip)))
        replies.append(c.ask(rcpt_request(
            user=user, sender=sender, instance=inst, state="END-OF-MESSAGE",
            recipient="", recipient_count=str(len(rcpts)), helo_name=helo,
            client=ip)))
    return replies


def one_and_two_hosts(a, b, mail, one, two):
    """The same mail of account `one` through host a alone, and of `two`
    spread over a and b in turn: every reply accepted."""
    ca = PolicyClient(a.policy_sock, timeout=20)
    cb = PolicyClient(b.policy_sock, timeout=20)
    replies = mail([ca], one) + mail([ca, cb], two)
    assert all(action(r) == "DUNNO" for r in replies)


def test_an_office_spread_over_the_fleet_is_not_suspected(tmp_path, redis):
    """The other side of summing evidence: each host learns an account's
    habits from its share of the mail, so a recipient known on one host is
    new on the other. An office's ordinary mail spread over two hosts must
    stay as unsuspicious as on one host: every reply DUNNO, the state
    NORMAL, and the fleet's score not above one host's by more than the
    summed learning noise (1 point). The hosts exchange the habits they
    learned through Redis, so a recipient, a sender or a PC known on one
    host is known on the other."""
    a, b = numbered_hosts(tmp_path, redis, max_msgs=100000)
    try:
        one_and_two_hosts(a, b, _office_mail, "one@office.example", "two@office.example")
        def top(d, key):
            return [x for x in d.ctl("top", "10")["accounts"]
                    if x["key"] == key][0]
        s1 = top(a, "u:one@office.example")
        sa = top(a, "u:two@office.example")
        sb = top(b, "u:two@office.example")
        print("office: one host %s %.2f, two hosts %s %.2f / %s %.2f" %
              (s1["state"], s1["score"], sa["state"], sa["score"],
               sb["state"], sb["score"]))
        for s in (s1, sa, sb):
            assert s["state"] == "NORMAL", s["state"]
        assert max(sa["score"], sb["score"]) <= s1["score"] + 1.0, \
            (s1["score"], sa["score"], sb["score"])
        # ben's own address (not the login's) fired forged_sender until it
        # was learned: twice on one host, and no more over the fleet (a
        # sender used on two hosts counts as used twice)
        one_host = {g["signal"]: g["times"] for g in
                    a.ctl("show", "u:one@office.example")["signals"]}
        # g0: forged_sender's "share time times last" in the fleet's sum
        g0 = redis.cli("HGET", "cp:{u:two@office.example}", "g0").split()
        assert 1 <= int(g0[2]) <= one_host["forged_sender"], (g0, one_host)
    finally:
        stop_clean(a, b)


def test_two_hosts_share_the_new_recipient_domains(tmp_path, redis):
    """The `domains` metric (new recipient domains an hour) is the
    fleet's: the ring of an account's recent domains lives in Redis, so a
    domain seen on one host is not new on the other, and the fourth new
    one over both is deferred on either."""
    classes = """
classes:
  residential:
    limits:
      - { metric: domains, window: 1h, max: 3 }
  unauthenticated:
    limits:
      - { metric: messages, window: 1h, max: 100 }
"""
    ds = []
    for name in ("a", "b"):
        ds.append(Daemon(tmp_path / name, classes=classes, extra={
            "store": "backend: redis\nredis: %s\nredis_timeout: 1s\n"
                     % redis.url(), "daemon": "log_level: info"}).start())
    a, b = ds
    try:
        connected(a, b)
        ca = PolicyClient(a.policy_sock, timeout=20)
        cb = PolicyClient(b.policy_sock, timeout=20)

        def send(c, inst, rcpt, user="d@example.net"):
            return action(c.ask(rcpt_request(user=user, instance=inst,
                                              recipient=rcpt)))

        assert send(ca, "m1", "x@one.example") == "DUNNO"
        assert send(cb, "m2", "x@two.example") == "DUNNO"
        # known on the other host: not new, as often as it goes
        for i in range(5):
            assert send(cb if i % 2 else ca, "k%d" % i,
                        "y@one.example") == "DUNNO"
        assert send(ca, "m3", "x@three.example") == "DUNNO"
        assert send(cb, "m4", "x@four.example") == "DEFER_IF_PERMIT"
        assert send(ca, "m5", "x@five.example") == "DEFER_IF_PERMIT"
        assert send(cb, "m6", "z@two.example") == "DUNNO"
        stop_clean(a, b)
    finally:
        for d in ds:
            d.stop()


def test_an_end_of_message_within_its_reservation_is_settled_here(
        tmp_path, redis):
    """An END-OF-MESSAGE whose final costs are within what its RCPTs
    reserved has nothing to check: it is answered at once, and Redis gets
    the difference (the recipients and bytes not used) without a script.
    One larger than its reservation still goes to Redis, which checks it."""
    classes = """
classes:
  residential:
    limits:
      - { metric: messages, window: 1h, max: 1000 }
      - { metric: recipients, window: 1h, max: 1000 }
      - { metric: bytes, window: 1d, max: 10M }
  unauthenticated:
    limits:
      - { metric: messages, window: 1h, max: 100 }
"""
    d = Daemon(tmp_path / "a", classes=classes, extra={
        "store": "checkpoint_interval: 1s\nbackend: redis\nredis: %s\n"
                 "redis_timeout: 1s\n" % redis.url(),
        "daemon": "log_level: info"}).start()
    try:
        connected(d)
        c = PolicyClient(d.policy_sock, timeout=20)
        user = "s@example.net"

        def message(inst, rcpts, said, count, size):
            """RCPTs declaring `said` bytes; END-OF-MESSAGE with `count`
            recipients and `size` bytes: every answer DUNNO."""
            for r in rcpts:
                assert action(c.ask(rcpt_request(
                    user=user, instance=inst, recipient=r,
                    size=said))) == "DUNNO"
            assert action(c.ask(rcpt_request(
                user=user, instance=inst, state="END-OF-MESSAGE",
                queue_id="", recipient_count=count, size=size,
                recipient=""))) == "DUNNO"

        # one recipient went, and 3000 bytes: within the reservation
        message("m1", ["a@x.example", "b@y.example"], "5000", "1", "3000")
        st = d.ctl("status")["fleet"]
        assert st["answered"] == 2 and st["settled"] == 1, st
        wait_for(lambda: abs(shared_level(redis, user, "bytes/1d") -
                             3000) < 1, "bytes settled", timeout=10)
        assert abs(shared_level(redis, user, "recipients/1h") - 1) < 0.01
        assert abs(shared_level(redis, user, "messages/1h") - 1) < 0.01
        # this host's copy agrees (leaked to now: 116 bytes a second)
        assert abs(d.counter("u:" + user, "bytes/1d") - 3000) < 100
        # larger than said: Redis checks it
        message("m2", ["a@x.example"], "100", "1", "900")
        st = d.ctl("status")["fleet"]
        assert st["answered"] == 4 and st["settled"] == 1, st
        assert abs(shared_level(redis, user, "bytes/1d") - 3900) < 100
        # the record gone between the RCPT and the END-OF-MESSAGE (evicted
        # by maxmemory, deleted): the settle does not make one that would
        # never expire; the next decision starts the account anew
        key = "cp:{u:%s}" % user
        for r in ["a@x.example", "b@y.example"]:
            assert action(c.ask(rcpt_request(
                user=user, instance="m3", recipient=r,
                size="5000"))) == "DUNNO"
        assert redis.cli("TTL", key) not in ("-1", "-2")
        redis.cli("DEL", key)
        assert action(c.ask(rcpt_request(
            user=user, instance="m3", state="END-OF-MESSAGE", queue_id="",
            recipient_count="1", size="3000", recipient=""))) == "DUNNO"
        wait_for(lambda: d.ctl("status")["fleet"]["settled"] == 2,
                 "the third message settled here", timeout=10)
        # (another account's RCPT, sent after the settle on the same
        # connection and answered: the settle has run)
        assert action(c.ask(rcpt_request(
            user="other@example.net", instance="o1",
            recipient="a@x.example"))) == "DUNNO"
        assert redis.cli("EXISTS", key) == "0", redis.cli("HGETALL", key)
        message("m4", ["a@x.example"], "100", "1", "100")
        assert redis.cli("TTL", key) not in ("-1", "-2")
        stop_clean(d)
    finally:
        d.stop()


def test_history_is_the_fleets(tmp_path, redis):
    """The abuse desk asks any host: `history` lists the account's state
    changes made on every host of the fleet, newest first, each with the
    host that made it and its incident number there; in its schema."""
    from test_json_schema import ctl_raw, validate
    a, b = numbered_hosts(tmp_path, redis)
    try:
        PolicyClient(a.policy_sock, timeout=20).ask(
            rcpt_request(user="h@example.net", instance="h1"))
        blk = a.ctl("block", "u:h@example.net", "--note", "complaint 17")
        rel = b.ctl("release", "u:h@example.net", "--note", "cleaned up")
        for d in (a, b):
            hist = d.ctl("history", "u:h@example.net")["history"]
            assert [(x["from"], x["to"]) for x in hist] == [
                ("MANUAL_HOLD", "PROBATION"), ("NORMAL", "MANUAL_HOLD")], hist
            assert hist[0]["host"].endswith("/2") and \
                hist[0]["incident"] == rel["incident"], hist
            assert hist[1]["host"].endswith("/1") and \
                hist[1]["incident"] == blk["incident"], hist
            assert "cleaned up" in hist[0]["reason"], hist
            rc, raw = ctl_raw(d, "history", "u:h@example.net")
            assert rc == 0, raw
            validate(raw, "history u:h@example.net")
            rc, raw = ctl_raw(d, "show", "u:h@example.net")
            assert rc == 0, raw
            validate(raw, "show u:h@example.net")
        text = subprocess.run([CHOKEPOINT, "-s", b.admin_sock, "history",
                               "u:h@example.net"], capture_output=True,
                              text=True, timeout=20).stdout
        assert "history of the fleet" in text and "@" in text, text
        # incident numbers are each host's: a number b never gave says so
        r = subprocess.run([CHOKEPOINT, "-s", b.admin_sock, "incident",
                            "999"], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 1 and "each host numbers its own" in \
            r.stdout + r.stderr, r
        # Redis gone: this host's own history, and says so
        redis.stop()
        text = subprocess.run([CHOKEPOINT, "-s", b.admin_sock, "history",
                               "u:h@example.net"], capture_output=True,
                              text=True, timeout=20).stdout
        assert "this host's history" in text and "PROBATION" in text, text
        # a change made meanwhile waits, and joins the fleet's history when
        # Redis is back (here empty: a restart without persistence)
        b.ctl("block", "u:h@example.net", "--note", "second complaint")
        redis.start()
        # (while a reconnects it shows its own history, without hosts)
        wait_for(lambda: [(x["to"], x.get("host", "")[-2:]) for x in a.ctl(
            "history", "u:h@example.net")["history"]][:1] ==
            [("MANUAL_HOLD", "/2")], "the waiting row added", timeout=30)
        hist = a.ctl("history", "u:h@example.net")["history"]
        assert hist[0]["host"].endswith("/2") and \
            "second complaint" in hist[0]["reason"], hist
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


def test_evidence_written_by_anyone_in_redis_is_harmless(tmp_path, redis):
    """Redis is shared: what its keys hold may have been written by anything.
    A login whose fleet evidence says "nan", "inf" or 1e999 and whose
    habits record is garbage is decided as usual: every reply DUNNO, no
    error reply, and the daemon exits cleanly."""
    a, b = numbered_hosts(tmp_path, redis, max_msgs=100000)
    try:
        ca = PolicyClient(a.policy_sock, timeout=20)
        k = "cp:{u:t@example.net}"
        ca.ask(rcpt_request(user="t@example.net", instance="t0"))
        redis.cli("HSET", k, "es", "inf", "et", "nan", "ev", "7",
                  "g0", "nan 1 2 3", "g2", "1e999 x -5 9e99", "g5", "junk")
        redis.cli("SET", "cph:{u:t@example.net}", "x" * 560)
        for i in range(12):
            if i == 6:  # the habits key of another type
                redis.cli("DEL", "cph:{u:t@example.net}")
                redis.cli("HSET", "cph:{u:t@example.net}", "x", "1")
            r = _zombie_message(ca, "t@example.net", i)
            assert all(action(x) in ("DUNNO", "DEFER_IF_PERMIT", "REJECT",
                                     "HOLD") for x in r), r
        st = a.ctl("status")["fleet"]
        assert st["errors"] == 0 and st["failed"] == 0, st
        es = redis.cli("HGET", k, "es")
        assert es not in ("nan", "inf", "-nan") and float(es) < 1e7, es
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


def test_counters_written_by_anyone_in_redis_are_read_as_empty(tmp_path,
                                                              redis):
    """A counter or a time in an account's record that is not a finite
    number from 0 ("nan", "inf", "-5", "abc"), written by anything that
    shares Redis, is read as an empty counter (a time: now): the decision
    is still Redis's (no local fallback, no error), the mail is not
    refused for it, and the field is written back as a number."""
    d = fleet_daemon(tmp_path, "a", redis.url(), max_msgs=10).start()
    try:
        connected(d)
        c = PolicyClient(d.policy_sock, timeout=20)
        for i, (t, bad) in enumerate((("1", "nan"), ("nan", "inf"),
                                      ("inf", "-5"), ("x", "abc"))):
            user = "h%d@example.net" % i
            redis.cli("HSET", "cp:{u:%s}" % user, "t", t,
                      "s:messages/1h", bad)
            assert action(c.ask(rcpt_request(
                user=user, instance="h%d" % i))) == "DUNNO", (t, bad)
            assert abs(shared_level(redis, user, "messages/1h") - 1) < 0.01
        st = d.ctl("status")["fleet"]
        assert st["failed"] == 0 and st["local"] == 0, st
        assert st["answered"] == 4, st
        stop_clean(d)
    finally:
        d.stop()


def _roaming_mail(clients, user, n=48):
    """A customer on the move: his phone's carrier, a hotel, a café, the
    office and home (five networks), his own address, a few recurring
    correspondents, spread over `clients` in turn."""
    nets = ["198.51.100.20", "203.0.113.77", "192.0.2.200", "100.64.3.9",
            "172.20.5.5"]
    replies = []
    for i in range(n):
        c = clients[i % len(clients)]
        inst = "r%s%d" % (user, i)
        ip = nets[(i // 3) % len(nets)]
        rcpt = "friend%d@mail%d.example" % (i % 6, i % 3)
        replies.append(c.ask(rcpt_request(
            user=user, sender=user, instance=inst, recipient=rcpt,
            helo_name="phone", client=ip)))
        replies.append(c.ask(rcpt_request(
            user=user, sender=user, instance=inst, state="END-OF-MESSAGE",
            recipient="", recipient_count="1", helo_name="phone",
            client=ip)))
    return replies


def test_a_roaming_customer_spread_over_the_fleet_is_not_suspected(
        tmp_path, redis):
    """Networks are habits too: a customer sending from five networks in
    turn (phone, hotel, office, home) over two hosts stays NORMAL, every
    message accepted, and the fleet counts `networks` as often as one host
    does. (Each host judges a message before its answer brings the other
    host's networks, so both fire for one new network when his messages
    alternate within seconds; Redis counts a network once an hour over the
    fleet. Without that: 4 times against 2.)"""
    a, b = numbered_hosts(tmp_path, redis, max_msgs=100000)
    try:
        one_and_two_hosts(a, b, _roaming_mail, "one@isp.example", "two@isp.example")
        s1 = {g["signal"]: g["times"] for g in
              a.ctl("show", "u:one@isp.example")["signals"]}
        g = redis.cli("HGET", "cp:{u:two@isp.example}", "g5").split()
        fleet = int(g[2]) if g else 0  # networks: signal 5
        print("networks fired: one host %s, two hosts %s" %
              (s1.get("networks", 0), fleet))
        assert fleet <= s1.get("networks", 0), (fleet, s1)
        for d in (a, b):
            assert d.ctl("show", "u:two@isp.example")["state"] == "NORMAL"
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


# one message through the milter (miltertest, the MTA's side) from LOGIN
# with queue id QID: prints "continue" or "refused" (the end of message)
MT_ONE = """
conn = mt.connect("unix:" .. sock)
assert(conn, "could not open connection")
assert(mt.conninfo(conn, "pc.example", "192.0.2.7") == nil)
assert(mt.getreply(conn) == SMFIR_CONTINUE)
assert(mt.macro(conn, string.byte("M"), "{auth_authen}", login, "i",
                qid) == nil)
assert(mt.mailfrom(conn, "<" .. login .. ">") == nil)
assert(mt.getreply(conn) == SMFIR_CONTINUE)
assert(mt.bodystring(conn, body) == nil)
assert(mt.getreply(conn) == SMFIR_CONTINUE)
assert(mt.eom(conn) == nil)
if mt.getreply(conn) == SMFIR_CONTINUE then print("continue")
else print("refused") end
assert(mt.disconnect(conn) == nil)
"""

FLEET_SPAM = ("Dear customer, your parcel could not be delivered today "
              "because the address on it was incomplete. Please confirm your "
              "details at the link below within 48 hours, or the parcel goes "
              "back to the sender and a fee of 2.99 applies. Reference "
              "number {n}. http://parcel-confirm.example/track Thank you.")


def milter_hosts(tmp_path, store, content):
    """Two daemons with milters on one fleet store (`store`'s settings),
    hosts 1 and 2, connected: ((a, its milter), (b, its milter), the
    miltertest script of one message)."""
    hosts = []
    for name, n in (("a", 1), ("b", 2)):
        sock = str(tmp_path / ("%s-milter.sock" % name))
        d = Daemon(tmp_path / name, classes=DETECTION_CLASSES +
                   content_section(sock, content),
                   extra={"store": store + "fleet_host: %d\n" % n,
                          "daemon": "log_level: info"})
        hosts.append((d.start(), sock))
    script = tmp_path / "one.lua"
    script.write_text(MT_ONE)
    connected(*(d for d, _ in hosts))
    return hosts[0], hosts[1], script


def told(d, n):
    """Wait until n bands of d's campaign table came back from Redis."""
    wait_for(lambda: d.ctl("status")["fleet"]["campaign_back"] >= n,
             "the fleet's bands back", timeout=20)


def campaign_over_two_hosts(tmp_path, store, keys):
    """A spam text spread over two hosts by the balancer (min_bad 0: a
    text many send is spam without outcomes): three logins send it
    (refuse_accounts: 3), the first on host A, the second and third on
    host B. B refuses the third copy at end of DATA, where B alone knows
    two senders (A's came back from Redis with B's first copy). `store`:
    the fleet store's settings; keys(): the bands' keys in Redis. Returns
    the two daemons, running."""
    (a, sock_a), (b, sock_b), script = milter_hosts(
        tmp_path, store, "campaign_accounts: 2\nrefuse_accounts: 3\n"
        "repeat: 1\nmin_bad: 0\nwindow: 10m\n")
    try:
        assert milter_send(script, sock_a, "sp1@isp.example", "QA1") == \
            "continue"
        told(a, 8)
        assert milter_send(script, sock_b, "sp2@isp.example", "QB1") == \
            "continue"
        told(b, 8)
        # B alone has seen sp2 and sp3: two senders; the fleet three
        assert milter_send(script, sock_b, "sp3@isp.example", "QB2") == \
            "refused", b.read_log()[-2000:]
        k = keys()
        assert len(k) >= 8, k  # (the reference numbers differ)
        st = b.ctl("status")
        assert st["content"]["refused"] == 1, st["content"]
        assert st["fleet"]["campaign"] == 16 and \
            st["fleet"]["errors"] == 0, st["fleet"]
    except BaseException:
        a.stop()
        b.stop()
        raise
    return a, b, sock_a, script


def milter_send(script, sock, login, qid):
    """One message through the milter (miltertest): its answer."""
    r = subprocess.run(["miltertest", "-D", "sock=" + sock, "-D",
                        "login=" + login, "-D", "qid=" + qid, "-D",
                        "body=" + FLEET_SPAM.format(n=qid), "-s",
                        str(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_the_campaign_table_is_the_fleets(tmp_path, redis):
    """The campaign table is the fleet's (campaign_over_two_hosts); its
    bands live in Redis for the content window; a host whose Redis is
    gone keeps answering from its own table."""
    a, b, sock_a, script = campaign_over_two_hosts(
        tmp_path, "backend: redis\nredis: %s\nredis_timeout: 1s\n" %
        redis.url(), lambda: redis.cli("KEYS", "cpc:*").split())
    try:
        ttl = int(redis.cli("PTTL", redis.cli("KEYS", "cpc:*").split()[0]))
        assert 0 < ttl <= 600000, ttl
        # Redis gone: A answers from its own table (sp1 and sp4: two
        # senders, below refusal), never an error
        redis.stop()
        wait_for(lambda: a.ctl("status")["fleet"]["connected"] == 0,
                 "disconnected", timeout=20)
        assert milter_send(script, sock_a, "sp4@isp.example", "QA2") == \
            "continue"
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


def test_copies_of_a_text_are_counted_over_the_fleet(tmp_path, redis):
    """An account counts among a text's senders from its second copy
    (repeat: 2), wherever the balancer sent its copies: sp1 and sp2 each
    send one copy to host A and one to host B. Each host saw one copy of
    each, but the fleet two: both count, and the next copy, from sp3, is
    refused (refuse_accounts: 2). Counted per host, nobody would count."""
    (a, sock_a), (b, sock_b), script = milter_hosts(
        tmp_path, "backend: redis\nredis: %s\nredis_timeout: 1s\n" %
        redis.url(), "campaign_accounts: 2\nrefuse_accounts: 2\n"
        "repeat: 2\nmin_bad: 0\nwindow: 10m\n")
    try:
        n = {a: 0, b: 0}
        for who, d, sock, qid in (("sp1", a, sock_a, "QA1"),
                                  ("sp1", b, sock_b, "QB1"),
                                  ("sp2", a, sock_a, "QA2"),
                                  ("sp2", b, sock_b, "QB2")):
            assert milter_send(script, sock, who + "@isp.example", qid) == \
                "continue"
            n[d] += 8
            told(d, n[d])
        assert milter_send(script, sock_b, "sp3@isp.example", "QB3") == \
            "refused", b.read_log()[-2000:]
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


def test_the_campaign_table_in_a_cluster(tmp_path, cluster):
    """The same in a Redis Cluster: a band per script, each on the node
    of its slot."""
    def keys():
        return [k for r in cluster.nodes
                for k in r.cli("KEYS", "cpc:*").split()]

    a, b, _, _ = campaign_over_two_hosts(
        tmp_path, "backend: redis\nredis_cluster: %s\nredis_timeout: 1s\n"
        % cluster.seeds(), keys)
    try:
        assert len({cluster.node_of(k)[0].port for k in keys()}) >= 2
        stop_clean(a, b)
    finally:
        a.stop()
        b.stop()


def make_tls(d):
    """A CA, a certificate for Redis on 127.0.0.1 (and localhost), one for
    a client, and a CA nobody uses, with Debian's openssl: {name: path}."""
    d.mkdir(exist_ok=True)
    p = {k: str(d / k) for k in ("ca.crt", "ca.key", "redis.crt",
                                "redis.key", "client.crt", "client.key",
                                "other.crt", "other.key", "ext.cnf")}

    def ssl(*args):
        subprocess.run(["openssl"] + list(args), check=True,
                       capture_output=True, timeout=60)

    for ca in ("ca", "other"):
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=test %s" % ca, "-keyout", p[ca + ".key"],
            "-out", p[ca + ".crt"])
    with open(p["ext.cnf"], "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who in ("redis", "client"):
        csr = str(d / (who + ".csr"))
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + who,
            "-keyout", p[who + ".key"], "-out", csr)
        ssl("x509", "-req", "-in", csr, "-CA", p["ca.crt"], "-CAkey",
            p["ca.key"], "-CAcreateserial", "-days", "2", "-out",
            p[who + ".crt"], "-extfile", p["ext.cnf"])
    for k in p:
        if k.endswith(".key"):
            os.chmod(p[k], 0o640)
    return p


def TlsRedis(tmpdir, tls):
    """redis-server speaking TLS only, asking clients for a certificate."""
    return Redis(tmpdir, tls=tls)


def tls_daemon(tmp_path, name, port, tls, extra=""):
    r = Redis(tmp_path, port=port, tls=tls)
    store = ("backend: redis\nredis: %s\nredis_timeout: 1s\n" % r.url() +
             r.tls_store() + extra)
    return Daemon(tmp_path / name, classes=LIMITED % ("1h", 10),
                  extra={"store": store, "daemon": "log_level: info"})


def test_redis_over_tls(tmp_path):
    """rediss://: two hosts share one limit to the message through a Redis
    that speaks TLS only and asks for a client certificate; the server's
    certificate is checked (its CA, its name or address): a daemon given
    another CA, or another name, is refused by the handshake, says why,
    and answers Postfix from its local copy. A key that is not the
    certificate's is refused by --check."""
    tls = make_tls(tmp_path / "tls")
    r = TlsRedis(tmp_path, tls).start()
    a = tls_daemon(tmp_path, "a", r.port, tls, "fleet_host: 1\n")
    b = tls_daemon(tmp_path, "b", r.port, tls, "fleet_host: 2\n")
    bad_ca = tls_daemon(tmp_path, "c", r.port,
                        dict(tls, **{"ca.crt": tls["other.crt"]}))
    bad_name = tls_daemon(tmp_path, "d", r.port, tls,
                          "redis_tls_name: redis.isp.example\n")
    try:
        chk = subprocess.run([CHOKEPOINTD, "--check", "-c", a.config],
                             capture_output=True, text=True, timeout=60)
        assert chk.returncode == 0 and "over TLS" in chk.stdout, chk
        # what a daemon killed before its exit left next to the store
        stale = os.path.join(a.dir, "redis-tls.AbC123")
        os.makedirs(stale)
        open(os.path.join(stale, "0.sock"), "w").close()
        for d in (a, b, bad_ca, bad_name):
            d.start()
        assert not os.path.exists(stale)
        connected(a, b)
        ca = PolicyClient(a.policy_sock, timeout=20)
        cb = PolicyClient(b.policy_sock, timeout=20)
        got = [action((ca if i % 2 == 0 else cb).ask(
            rcpt_request(user="t@example.net", instance="t%d" % i)))
            for i in range(12)]
        assert got == ["DUNNO"] * 10 + ["DEFER_IF_PERMIT"] * 2, got
        assert float(r.cli("HGET", "cp:{u:t@example.net}",
                           "s:messages/1h")) > 9.9  # (leaking since)
        # the wrong CA, the wrong name: refused, said, answered locally
        for d, why in ((bad_ca, "self-signed certificate"),
                       (bad_name, "hostname mismatch")):
            wait_for(lambda d=d, why=why: why in d.read_log(),
                     "the handshake refused: " + why, timeout=20)
            c = PolicyClient(d.policy_sock, timeout=20)
            assert action(c.ask(rcpt_request(user="u@example.net",
                                             instance="u"))) == "DUNNO"
            assert d.ctl("status")["fleet"]["connected"] == 0
        # a person's command (the blocking connection) goes over TLS too
        a.ctl("block", "u:t@example.net", "--note", "over TLS")
        assert b.ctl("show", "u:t@example.net")["state"] == "MANUAL_HOLD"
        stop_clean(a, b, bad_ca, bad_name)
        for d in (a, b):
            left = [f for f in os.listdir(d.dir) if f.startswith("redis-tls")]
            assert left == [], left  # the relay's sockets are removed
        # --check: a key that is not the certificate's
        wrong = tls_daemon(tmp_path, "e", r.port,
                           dict(tls, **{"client.key": tls["redis.key"]}))
        chk = subprocess.run([CHOKEPOINTD, "--check", "-c", wrong.config],
                             capture_output=True, text=True, timeout=60)
        assert chk.returncode == 1 and \
            "does not belong to the certificate" in chk.stderr and \
            wrong.config in chk.stderr, chk.stderr
        # a CA bundle whose second certificate does not parse
        broken = str(tmp_path / "broken-ca.crt")
        with open(broken, "w") as f:
            f.write(open(tls["ca.crt"]).read() +
                    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                    "-----END CERTIFICATE-----\n")
        wrong = tls_daemon(tmp_path, "f", r.port,
                           dict(tls, **{"ca.crt": broken}))
        chk = subprocess.run([CHOKEPOINTD, "--check", "-c", wrong.config],
                             capture_output=True, text=True, timeout=60)
        assert chk.returncode == 1 and "store.redis_tls_ca" in chk.stderr \
            and "does not parse" in chk.stderr, chk.stderr
    finally:
        for d in (a, b, bad_ca, bad_name):
            d.stop()
        r.stop()


def test_a_cluster_over_tls(tmp_path):
    """A Redis Cluster whose nodes, and their bus, speak TLS only: the
    daemon reaches each node the slot map names through its relay, two
    hosts share one limit for accounts on several nodes, and a block on
    one refuses on the other."""
    tls = make_tls(tmp_path / "tls")
    c = Cluster(tmp_path, tls=tls)
    try:
        c.start()
        store = ("checkpoint_interval: 1s\nbackend: redis\n"
                 "redis_cluster: %s\nredis_timeout: 1s\nredis_tls_ca: %s\n"
                 "redis_tls_cert: %s\nredis_tls_key: %s\n" %
                 (c.seeds(), tls["ca.crt"], tls["client.crt"],
                  tls["client.key"]))
        a, b = (Daemon(tmp_path / n, classes=LIMITED % ("1h", 10),
                       extra={"store": store + "fleet_host: %d\n" % i,
                              "daemon": "log_level: info"}).start()
                for n, i in (("a", 1), ("b", 2)))
        try:
            cluster_shares_limits(a, b, c)
            stop_clean(a, b)
        finally:
            a.stop()
            b.stop()
    finally:
        c.stop()


def test_sentinel_over_tls(tmp_path):
    """A primary and its Sentinel speaking TLS only: the daemon asks the
    Sentinel where the primary is, through the relay, reaches the primary
    through another, and its decisions are counted there."""
    tls = make_tls(tmp_path / "tls")
    os.makedirs(tmp_path / "m")
    master = TlsRedis(tmp_path / "m", tls).start()
    sentinel = Sentinel(tmp_path, master)
    a = None
    try:
        sentinel.watching()
        a = Daemon(tmp_path / "a", classes=LIMITED % ("1h", 10), extra={
            "store": "backend: redis\nredis_sentinels: [%s]\n"
                     "redis_master: prim\nredis_timeout: 1s\n" %
                     sentinel.url() + master.tls_store(),
            "daemon": "log_level: info"}).start()
        connected(a)
        c = PolicyClient(a.policy_sock, timeout=20)
        got = [action(c.ask(rcpt_request(user="s@example.net",
                                         instance="s%d" % i)))
               for i in range(11)]
        assert got == ["DUNNO"] * 10 + ["DEFER_IF_PERMIT"], got
        assert float(master.cli("HGET", "cp:{u:s@example.net}",
                                "s:messages/1h")) > 9.9
        stop_clean(a)
    finally:
        if a is not None:
            a.stop()
        sentinel.stop()
        master.stop()


def test_a_sentinel_with_a_password(tmp_path):
    """Sentinels that ask for a password (their requirepass), in front of
    a primary that asks for its own: given in the Sentinel's URL or in
    store.redis_sentinel_password_file, the daemon finds the primary and
    shares its decisions there; a wrong one is said in the log, naming the
    Sentinel and what it answered, and Postfix is answered locally."""
    os.makedirs(tmp_path / "m")
    master = Redis(tmp_path / "m", password="prim-secret").start()
    sentinel = Sentinel(tmp_path, master, password="sent-secret")
    pw = tmp_path / "primary.pass"
    pw.write_text("prim-secret\n")
    os.chmod(pw, 0o600)
    spw = tmp_path / "sentinel.pass"
    spw.write_text("sent-secret\n")
    os.chmod(spw, 0o600)
    daemons = []

    def daemon(name, sentinel, more=""):
        d = Daemon(tmp_path / name, classes=LIMITED % ("1h", 10), extra={
            "store": "backend: redis\nredis_sentinels: [%s]\n"
                     "redis_master: prim\nredis_timeout: 1s\n"
                     "redis_password_file: %s\n%s" % (sentinel, pw, more),
            "daemon": "log_level: info"}).start()
        daemons.append(d)
        return d

    try:
        sentinel.watching()
        a = daemon("a", "redis://:sent-secret@127.0.0.1:%d" % sentinel.port)
        b = daemon("b", "redis://127.0.0.1:%d" % sentinel.port,
                   "redis_sentinel_password_file: %s\n" % spw)
        connected(a, b)
        ca = PolicyClient(a.policy_sock, timeout=20)
        got = [action(ca.ask(rcpt_request(user="s@example.net",
                                          instance="s%d" % i)))
               for i in range(10)]
        assert got == ["DUNNO"] * 10, got
        assert float(master.cli("HGET", "cp:{u:s@example.net}",
                                "s:messages/1h")) > 9.9
        # the other host, through the file's password: the same limit
        cb = PolicyClient(b.policy_sock, timeout=20)
        assert action(cb.ask(rcpt_request(
            user="s@example.net", instance="s10"))) == "DEFER_IF_PERMIT"
        # a wrong password: said, and Postfix answered from the local copy
        c = daemon("c", "redis://:wrong@127.0.0.1:%d" % sentinel.port)
        wait_for(lambda: "does not name the primary 'prim' (it said: "
                 in c.read_log(), "the refusal logged", timeout=20)
        assert "sent-secret" not in c.read_log()
        cc = PolicyClient(c.policy_sock, timeout=20)
        assert action(cc.ask(rcpt_request(user="s@example.net",
                                          instance="c1"))) == "DUNNO"
        assert c.ctl("status")["fleet"]["connected"] == 0
        stop_clean(a, b)
    finally:
        for d in daemons:
            d.stop()
        sentinel.stop()
        master.stop()


def test_the_campaign_script_on_hostile_and_popular_bands(redis):
    """src/store/lua/campaign.lua run by the real server as the daemon
    calls it: a sender counts from its `repeat`-th copy; what anyone wrote
    at a band (another type, nonsense numbers) is replaced or bounded; a
    band many send (a footer) counts the copies of 4,096 senders at most,
    not a field more."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "..", "src", "store", "lua", "campaign.lua")
    script = open(src).read()

    def call(keys, bit, acct, sent=0, bad=0, repeat=2):
        out = redis.cli("EVAL", script, str(len(keys)), *keys, str(bit),
                        str(sent), str(bad), "600000", acct, str(repeat))
        v = [int(x) for x in out.split()]
        return [v[i:i + 5] for i in range(0, len(v), 5)]

    # a copy, then another: the sender's bit (40: the high word) from
    # the second
    assert call(["cpc:{00000001}"], 40, "0000aaaa") == [[0, 0, 0, 0, 1]]
    assert call(["cpc:{00000001}"], 40, "0000aaaa") == [[0, 256, 0, 0, 2]]
    # an outcome: no sender, counts added
    assert call(["cpc:{00000001}"], -1, "00000000", 1, 1) == \
        [[0, 256, 1, 1, 0]]
    # written by anyone: a string, nonsense numbers
    redis.cli("SET", "cpc:{00000002}", "junk")
    redis.cli("HSET", "cpc:{00000003}", "lo", "1e30", "s", "nan", "b",
              "99999999")
    got = call(["cpc:{00000002}", "cpc:{00000003}"], 3, "0000bbbb",
               repeat=1)
    assert got == [[8, 0, 0, 0, 1], [8, 0, 0, 0, 1]], got
    assert redis.cli("TYPE", "cpc:{00000002}") == "hash"
    # a popular band: 4,096 senders' copies, then no more fields
    args = []
    for i in range(4096):
        args += ["a:%08x" % i, "1"]
    redis.cli("HSET", "cpc:{00000004}", "lo", "0", "hi", "0", "s", "0",
              "b", "0", *args)
    assert call(["cpc:{00000004}"], 5, "0000cccc", repeat=1) == \
        [[0, 0, 0, 0, 0]]
    assert int(redis.cli("HLEN", "cpc:{00000004}")) == 4100
    # ...but a sender it counts already goes on counting
    assert call(["cpc:{00000004}"], 5, "00000007", repeat=1) == \
        [[32, 0, 0, 0, 2]]


def test_a_block_is_notified_once_over_the_fleet(tmp_path, redis):
    """A zombie spread over two hosts is blocked once, and notified once:
    one webhook event for the incident, from the host whose decision made
    the change (the compare-and-set in Redis: the other host only learns
    the state), however many of its messages each host then refuses."""
    from test_containment import Webhook
    hook = Webhook()
    notify = ("notify:\n  sendmail: /bin/true\n  from: abuse@isp.example\n"
              "  webhook: %s\n  retry: 300ms\n  attempts: 3\n" % hook.url)
    hosts = []
    try:
        for name, n in (("a", 1), ("b", 2)):
            store = ("checkpoint_interval: 1s\nbackend: redis\nredis: %s\n"
                     "redis_timeout: 1s\nfleet_host: %d\n" % (redis.url(), n))
            hosts.append(Daemon(tmp_path / name,
                                classes=LIMITED % ("1h", 100000) + notify,
                                extra={"store": store,
                                       "daemon": "log_level: info"}).start())
        a, b = hosts
        connected(a, b)
        clients = [PolicyClient(d.policy_sock, timeout=20) for d in (a, b)]
        n = _messages_until_blocked(clients, "zz@example.net")
        assert n is not None, "not blocked"
        # both hosts refuse it now, a few more times each
        for i in range(4):
            r = _zombie_message(clients[i % 2], "zz@example.net", 100 + i)
            assert action(r[0]) != "DUNNO", r
        wait_for(lambda: any(json.loads(p[2]).get("state") == "BLOCKED"
                             for p in hook.posts), "the webhook", timeout=20)
        time.sleep(1.5)  # (a second one would have come by now)
        events = [json.loads(p[2]) for p in hook.posts]
        blocked = [e for e in events if e.get("event") == "incident" and
                   e.get("state") == "BLOCKED"]
        assert len(blocked) == 1, events
        for d in (a, b):
            assert d.ctl("show", "u:zz@example.net")["state"] == "BLOCKED"
        stop_clean(a, b)
    finally:
        for d in hosts:
            d.stop()
        hook.close()
