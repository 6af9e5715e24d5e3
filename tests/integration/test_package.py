"""The Debian package and `meson install`, for real (marker `package`).

The package tests build the .deb from a copy of the tree
(dpkg-buildpackage -b -uc -us), run lintian on it, install it with dpkg,
check what it installed, run the installed chokepointd on the installed
configuration as root (it drops to the user chokepoint), ask it through
the installed socket path directly and through a private Postfix whose
smtpd runs chrooted in Debian's queue directory
(`check_policy_service unix:chokepoint/policy.sock`), and purge it.

They change the machine, so they put it back, failure or not:
  * they skip if chokepoint is installed as a package already, or a
    chokepointd holds /var/lib/chokepoint's store, or Debian's own Postfix
    runs on /var/spool/postfix;
  * what a `make run` left in the package's places (/etc/chokepoint,
    /var/lib/chokepoint, /var/log/chokepoint, /run/chokepoint) is moved
    aside first and moved back after the purge;
  * the user chokepoint is removed again if the package created it;
  * whatever the private Postfix added to /var/spool/postfix (pid files,
    sockets) is removed; processes are stopped by their PID.
Root, dpkg-buildpackage, lintian and Postfix are needed (scripts/deps.sh);
without them the tests skip. About 40 s on two cores, most of it the
build. The sanitizer pass deselects them (-m 'not package'): they test the
package, not the build under test.
"""
import os
import pwd
import grp
import fcntl
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from cpd import BUILD, CHOKEPOINT, ROOT, PolicyClient, rcpt_request, wait_for
import postfix

pytestmark = pytest.mark.package

PKG = "chokepoint"
CONF = "/etc/chokepoint/chokepoint.yaml"
SPOOL = "/var/spool/postfix"
SOCK_DIR = SPOOL + "/chokepoint"
SOCK = SOCK_DIR + "/policy.sock"
ADMIN = "/run/chokepoint/admin.sock"
STORE_LOCK = "/var/lib/chokepoint/state.db.lock"
# the package's places that a `make run` may have filled before
PLACES = ["/etc/chokepoint", "/var/lib/chokepoint", "/var/log/chokepoint",
          "/run/chokepoint"]
SAVED_SUFFIX = ".before-package-test"


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def pkg_installed():
    r = run(["dpkg-query", "-W", "-f=${Status}", PKG])
    return r.returncode == 0 and "installed" in r.stdout.split()


def store_in_use():
    """Is a chokepointd holding the store lock of /var/lib/chokepoint?"""
    try:
        fd = os.open(STORE_LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def tree(top):
    """Every path under `top` (top itself excluded)."""
    out = set()
    for d, dirs, files in os.walk(top):
        out.update(os.path.join(d, n) for n in dirs + files)
    return out


def copy_tree(dst):
    """The source tree as git sees it (tracked and new files, no build
    directories) into `dst`; a plain copy without git."""
    r = run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"])
    if r.returncode != 0:
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
            ".git", "build", "build-*", "obj-*", "__pycache__"))
        return
    for rel in filter(None, r.stdout.split("\0")):
        src = os.path.join(ROOT, rel)
        if not os.path.lexists(src):
            continue  # deleted in the work tree
        os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, rel), follow_symlinks=False)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """The .deb and .changes built from a copy of the tree."""
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed (scripts/deps.sh)" % tool)
    top = tmp_path_factory.mktemp("deb")
    src = top / "chokepoint"
    copy_tree(str(src))
    # the unit tests run in their own suite; no debug symbols package
    env = dict(os.environ,
               DEB_BUILD_OPTIONS="parallel=2 nocheck noautodbgsym")
    r = run(["dpkg-buildpackage", "-b", "-uc", "-us"], cwd=str(src), env=env)
    assert r.returncode == 0, "dpkg-buildpackage failed:\n%s%s" % (
        r.stdout[-4000:], r.stderr[-4000:])
    debs = [p for p in top.glob("chokepoint_*.deb")]
    changes = list(top.glob("chokepoint_*.changes"))
    assert len(debs) == 1 and len(changes) == 1, os.listdir(str(top))
    return {"deb": str(debs[0]), "changes": str(changes[0])}


class Machine:
    """What the package test changes outside its tmp directories, and how
    it is put back."""

    def __init__(self):
        self.moved = []
        self.user_existed = self._user_exists()
        self.spool_before = tree(SPOOL) if os.path.isdir(SPOOL) else None

    @staticmethod
    def _user_exists():
        try:
            pwd.getpwnam("chokepoint")
            return True
        except KeyError:
            return False

    def move_aside(self):
        for p in PLACES:
            if os.path.lexists(p):
                assert not os.path.lexists(p + SAVED_SUFFIX), (
                    "%s exists: an earlier package test did not finish; "
                    "put it back by hand" % (p + SAVED_SUFFIX))
                os.rename(p, p + SAVED_SUFFIX)
                self.moved.append(p)

    def restore(self):
        for p in list(self.moved):
            if os.path.lexists(p):
                shutil.rmtree(p, ignore_errors=True)
            os.rename(p + SAVED_SUFFIX, p)
            self.moved.remove(p)
        if not self.user_existed and self._user_exists():
            run(["userdel", "chokepoint"])
            try:
                grp.getgrnam("chokepoint")
                run(["groupdel", "chokepoint"])
            except KeyError:
                pass
        if self.spool_before is not None:
            # deepest first: what the private Postfix or the daemon added
            for p in sorted(tree(SPOOL) - self.spool_before, reverse=True):
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                elif os.path.lexists(p):
                    os.unlink(p)


def purge():
    return run(["dpkg", "--purge", PKG])


@pytest.fixture(scope="module")
def installed(deb):
    """The package installed with dpkg -i; purged and the machine put back
    afterwards, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    if pkg_installed():
        pytest.skip("chokepoint is installed as a package already")
    if store_in_use():
        pytest.skip("a chokepointd is running on /var/lib/chokepoint")
    if run(["postfix", "status"]).returncode == 0:
        pytest.skip("Debian's Postfix runs on %s" % SPOOL)
    m = Machine()
    try:
        m.move_aside()
        r = run(["dpkg", "-i", deb["deb"]])
        assert r.returncode == 0, "dpkg -i failed:\n%s%s" % (r.stdout, r.stderr)
        yield m
    finally:
        if pkg_installed() or run(["dpkg-query", "-W", PKG]).returncode == 0:
            purge()
        m.restore()


@pytest.fixture(scope="module")
def daemon(installed, tmp_path_factory):
    """The installed chokepointd on the installed configuration, started
    as root (no systemd here), stopped by its PID."""
    log = str(tmp_path_factory.mktemp("pkgd") / "chokepointd.log")
    with open(log, "wb") as logf:
        proc = subprocess.Popen(["/usr/sbin/chokepointd", "-c", CONF],
                                stdout=logf, stderr=subprocess.STDOUT)
    try:
        def up():
            assert proc.poll() is None, "chokepointd exited:\n" + open(log).read()
            try:
                PolicyClient(SOCK, timeout=2).close()
                return True
            except OSError:
                return False
        wait_for(up, "the installed chokepointd on " + SOCK)
        yield {"proc": proc, "log": log}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_lintian_clean(deb):
    r = run(["lintian", "--info", "--display-info", deb["changes"]])
    bad = [l for l in r.stdout.splitlines() if l[:2] in ("E:", "W:")]
    assert not bad, "lintian:\n" + r.stdout + r.stderr


def unit_exec_start():
    with open("/lib/systemd/system/chokepoint.service") as f:
        for line in f:
            if line.startswith("ExecStart="):
                return line.split("=", 1)[1].split()
    raise AssertionError("chokepoint.service has no ExecStart")


def test_installed_files(installed):
    u = pwd.getpwnam("chokepoint")
    assert u.pw_dir == "/var/lib/chokepoint"
    assert u.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin")
    argv = unit_exec_start()
    assert argv[0] == "/usr/sbin/chokepointd" and os.access(argv[0], os.X_OK)
    assert argv[1:] == ["-c", CONF] and os.path.isfile(CONF)
    assert os.access("/usr/bin/chokepoint", os.X_OK)
    with open("/lib/systemd/system/chokepoint.service") as f:
        unit = f.read()
    for key in ("LogsDirectory=chokepoint", "StateDirectory=chokepoint",
                "RuntimeDirectory=chokepoint",
                "ReadWritePaths=-" + SOCK_DIR, "ProtectSystem=strict"):
        assert key in unit
    # the man pages the unit and chokepointd(8) name
    for page in ("chokepointd", "chokepoint", "chokepoint.yaml",
                 "chokepoint-customers"):
        r = run(["man", "-w", page])
        assert r.returncode == 0 and "/usr/share/man/" in r.stdout, page
    # the documents they point to, readable as they are (not gzipped): the
    # unit's Documentation=, doc/json.md and the schemas it names
    doc = "/usr/share/doc/chokepoint/"
    assert "Documentation=file:%sREADME.md" % doc in unit
    for f in ("README.md", "detection.md", "json.md",
              "schema/decision.json", "schema/webhook.json"):
        assert os.path.isfile(doc + f), f
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", PKG]).stdout
    for f in (CONF, "/etc/chokepoint/customers.map",
              "/etc/logrotate.d/chokepoint"):
        assert f in conffiles and os.path.isfile(f)
    for f in ("/usr/libexec/chokepoint/chokepoint-queue-request",
              "/usr/libexec/chokepoint/chokepoint-postsuper"):
        assert os.access(f, os.X_OK)
    with open("/etc/logrotate.d/chokepoint") as f:
        rot = f.read()
    assert "/var/log/chokepoint/*.jsonl" in rot and "USR1" in rot
    # the policy socket's directory: chokepoint, group postfix, 2750
    st = os.stat(SOCK_DIR)
    assert st.st_uid == u.pw_uid
    assert st.st_gid == grp.getgrnam("postfix").gr_gid
    assert stat.S_IMODE(st.st_mode) == 0o2750


def test_check_installed_config(installed):
    r = run(["/usr/sbin/chokepointd", "--check", "-c", CONF])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout + r.stderr


def test_daemon_drops_and_answers(daemon):
    pid = daemon["proc"].pid
    with open("/proc/%d/status" % pid) as f:
        uids = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
    assert set(uids) == {str(pwd.getpwnam("chokepoint").pw_uid)}
    st = os.stat(SOCK)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == grp.getgrnam("postfix").gr_gid
    c = PolicyClient(SOCK)
    try:
        reply = c.ask(rcpt_request(user="pkgtest@isp.example"))
    finally:
        c.close()
    assert reply.startswith("action=DUNNO"), reply
    r = run([CHOKEPOINT, "-s", ADMIN, "show", "pkgtest@isp.example"])
    assert r.returncode == 0 and "pkgtest@isp.example" in r.stdout, \
        r.stdout + r.stderr


CHROOT_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pkgtest.example
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtputf8_enable = no
smtpd_tls_security_level = none
biff = no
default_process_limit = 5
smtpd_relay_restrictions = permit_mynetworks, reject
# relative to queue_directory, which is also the chrooted smtpd's root
smtpd_recipient_restrictions = check_policy_service unix:chokepoint/policy.sock
smtpd_policy_service_timeout = 10s
"""


@pytest.fixture
def chrooted_postfix(daemon, tmp_path):
    """A private Postfix on Debian's queue directory whose smtpd runs
    chrooted (master.cf chroot column y), as Debian ships it."""
    for tool in ("postfix", "postconf"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    base = tempfile.mkdtemp(prefix=postfix.BASE_PREFIX)
    os.chmod(base, 0o755)
    etc, data = os.path.join(base, "etc"), os.path.join(base, "data")
    os.makedirs(etc)
    os.makedirs(data)
    pf = pwd.getpwnam("postfix")
    os.chown(data, pf.pw_uid, pf.pw_gid)
    port = postfix.free_port()
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write(CHROOT_MAIN_CF.format(spool=SPOOL, d=base))
    master = postfix.MASTER_CF.format(port=port).replace(
        "inet n - n - - smtpd", "inet n - y - - smtpd")
    assert "inet n - y - - smtpd" in master
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write(master)
    postfix._register_config_dir(etc, add=True)
    started = False
    try:
        r = run(["postfix", "-c", etc, "start"])
        started = r.returncode == 0
        assert started, "postfix start: %s%s" % (r.stdout, r.stderr)
        wait_for(lambda: postfix.Postfix._banner(port), "Postfix on %d" % port)
        yield {"port": port, "maillog": os.path.join(base, "maillog")}
    finally:
        if started:
            pidf = os.path.join(SPOOL, "pid", "master.pid")
            try:
                with open(pidf) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                pid = None
            run(["postfix", "-c", etc, "stop"])
            deadline = time.time() + 15
            while pid and time.time() < deadline and postfix._pid_alive(pid):
                time.sleep(0.1)
            if pid and postfix._pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        postfix._register_config_dir(etc, add=False)
        shutil.rmtree(base, ignore_errors=True)


def test_chrooted_smtpd_reaches_policy_socket(chrooted_postfix):
    # smtpd_policy_service_default_action is 451 4.3.5: a 250 to RCPT
    # means the chrooted smtpd got chokepointd's answer
    s = smtplib.SMTP("127.0.0.1", chrooted_postfix["port"], timeout=60)
    try:
        s.ehlo("pc.pkgtest.example")
        assert s.mail("alice@client.example")[0] == 250
        code, text = s.rcpt("bob@example.net")
        s.rset()
    finally:
        s.quit()
    with open(chrooted_postfix["maillog"]) as f:
        log = f.read()
    assert code == 250, "RCPT: %d %s\n%s" % (code, text, log)
    r = run([CHOKEPOINT, "-s", ADMIN, "show", "127.0.0.1"])
    assert r.returncode == 0 and "127.0.0.1" in r.stdout, r.stdout + r.stderr


def test_purge_leaves_nothing(installed, daemon):
    proc = daemon["proc"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    r = purge()
    assert r.returncode == 0, r.stdout + r.stderr
    assert not pkg_installed()
    for p in PLACES + [SOCK_DIR, "/usr/sbin/chokepointd",
                       "/lib/systemd/system/chokepoint.service",
                       "/etc/logrotate.d/chokepoint"]:
        assert not os.path.lexists(p), p


EXPECTED_INSTALL = [
    "sbin/chokepointd", "bin/chokepoint",
    "systemd/system/chokepoint.service",
    "systemd/system/chokepoint-postsuper.service",
    "systemd/system/chokepoint-postsuper.path",
    "etc/chokepoint/chokepoint.yaml", "etc/chokepoint/customers.map",
    "etc/logrotate.d/chokepoint", "sysusers.d/chokepoint.conf",
    "tmpfiles.d/chokepoint.conf",
    "libexec/chokepoint/chokepoint-queue-request",
    "libexec/chokepoint/chokepoint-postsuper",
    "man/man1/chokepoint.1", "man/man8/chokepointd.8",
    "man/man5/chokepoint.yaml.5", "man/man5/chokepoint-customers.5",
] + ["doc/chokepoint/%s.md" % d for d in (
    "README", "design", "detection", "efficacy", "json", "performance",
    "replay", "sim")] + ["doc/chokepoint/schema/%s" % f for f in sorted(
        os.listdir(os.path.join(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))), "doc", "schema")))]


def test_meson_install_destdir(tmp_path):
    """`meson install` of the build under test puts every file in place,
    and the unit and the config name the paths of that install."""
    if not os.path.isfile(os.path.join(BUILD, "build.ninja")):
        pytest.skip("no meson build directory at %s" % BUILD)
    dest = str(tmp_path / "dest")
    r = run(["meson", "install", "-C", BUILD, "--destdir", dest,
             "--no-rebuild", "--quiet"])
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(os.path.relpath(p, dest) for p in tree(dest)
                   if not os.path.isdir(p))
    for want in EXPECTED_INSTALL:
        assert [f for f in files if f.endswith(want)], (want, files)
    assert len(files) == len(EXPECTED_INSTALL), files
    unit = [f for f in files if f.endswith("system/chokepoint.service")][0]
    with open(os.path.join(dest, unit)) as f:
        argv = [l.split("=", 1)[1].split() for l in f
                if l.startswith("ExecStart=")][0]
    assert os.access(dest + argv[0], os.X_OK), argv
    config = dest + argv[2]
    assert os.path.isfile(config), argv
    with open(config) as f:
        text = f.read()
    cmap = [l.split(":", 1)[1].strip() for l in text.splitlines()
            if l.strip().startswith("customer_map:")][0]
    assert os.path.isfile(dest + cmap), cmap
    assert "@" not in "".join(argv)
