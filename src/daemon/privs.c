/*
 * privs.c — the process around the daemon, set up before anything is
 * served: the descriptor limit, the state directory's lock, the
 * directories of the sockets and the store, and the privilege drop.
 *
 * Order at start (main.c): limits, directories, the lock (before any
 * socket is touched, so a second instance never unlinks a live one's
 * sockets), sockets (bound as root), then the drop to daemon.user; the
 * store, the decision log and every command run afterwards as that user.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pwd.h>

#include "daemon/daemon.h"
#include "util/msg.h"
#include "util/parse.h"

/* daemon.user/.group, resolved (the configuration keeps the names: the
 * simulator and replay load it on machines without that user) */
static struct {
    bool set;
    uid_t uid;
    gid_t gid;
    char name[256];
} run;

int
privs_resolve(const struct cp_config *cfg, char *err, size_t errsz)
{
    struct passwd *pw;
    uint64_t n;

    run.set = false;
    if (cfg->run_user == NULL) {
        if (cfg->run_group != NULL) {
            snprintf(err, errsz, "%s: daemon.group needs daemon.user",
                     cfg->file);
            return -1;
        }
        return 0;
    }
    pw = parse_u64(cfg->run_user, strlen(cfg->run_user), &n)
             ? getpwuid((uid_t)n)
             : getpwnam(cfg->run_user);
    if (pw == NULL) {
        snprintf(err, errsz, "%s: daemon.user: no such user '%s' (create it, "
                 "e.g. useradd --system --user-group --no-create-home "
                 "--shell /usr/sbin/nologin %s)",
                 cfg->file, cfg->run_user, cfg->run_user);
        return -1;
    }
    run.uid = pw->pw_uid;
    run.gid = pw->pw_gid;
    snprintf(run.name, sizeof(run.name), "%s", pw->pw_name);
    if (cfg->run_group != NULL) {
        struct group *gr =
            parse_u64(cfg->run_group, strlen(cfg->run_group), &n)
                ? getgrgid((gid_t)n)
                : getgrnam(cfg->run_group);

        if (gr == NULL) {
            snprintf(err, errsz, "%s: daemon.group: no such group '%s'",
                     cfg->file, cfg->run_group);
            return -1;
        }
        run.gid = gr->gr_gid;
    }
    run.set = true;
    return 0;
}

/* Descriptors besides the connections: listeners, the store's files,
 * the log follower, DNS, command pipes, refused connections in passing. */
#define FD_MARGIN 256

void
privs_fd_limit(const struct cp_config *cfg)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)cfg->max_connections + FD_MARGIN;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        msg_fatal("getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    if (rl.rlim_cur >= need)
        return;
    if (rl.rlim_max < need) {
        struct rlimit up = {need, need};

        /* root may raise the hard limit too */
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
            msg_info("raised the descriptor limit from %llu (hard %llu) to "
                     "%llu (protocol.max_connections %u + %d)",
                     (unsigned long long)rl.rlim_cur,
                     (unsigned long long)rl.rlim_max,
                     (unsigned long long)need, cfg->max_connections,
                     FD_MARGIN);
            return;
        }
        msg_fatal("the descriptor limit is %llu (hard limit %llu), below "
                  "protocol.max_connections (%u) + %d: raise LimitNOFILE "
                  "(systemd) or ulimit -n, or lower max_connections",
                  (unsigned long long)rl.rlim_cur,
                  (unsigned long long)rl.rlim_max, cfg->max_connections,
                  FD_MARGIN);
    }
    msg_info("raised the descriptor limit from %llu to %llu "
             "(protocol.max_connections %u + %d)",
             (unsigned long long)rl.rlim_cur, (unsigned long long)need,
             cfg->max_connections, FD_MARGIN);
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        msg_fatal("setrlimit(RLIMIT_NOFILE, %llu): %s",
                  (unsigned long long)need, strerror(errno));
}

/* The directory part of `path` into buf ("." when it has none). */
static const char *
dir_of(const char *path, char *buf, size_t n)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        snprintf(buf, n, ".");
    else if (slash == path)
        snprintf(buf, n, "/");
    else
        snprintf(buf, n, "%.*s", (int)(slash - path), path);
    return buf;
}

static bool
is_memory(const char *path)
{
    return strcmp(path, ":memory:") == 0;
}

static off_t
file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_size : -1;
}

int
privs_lock(const struct cp_config *cfg, bool new_store)
{
    char lock[4096], wal[4096], pid[32];
    bool existed;
    off_t db, w;
    int fd, n;

    if (is_memory(cfg->store_path))
        return -1;
    snprintf(lock, sizeof(lock), "%s.lock", cfg->store_path);
    existed = access(lock, F_OK) == 0;
    fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        msg_fatal("store lock %s: %s", lock, strerror(errno));
    if (run.set && geteuid() == 0 && fchown(fd, run.uid, run.gid) < 0)
        msg_warn("store lock %s: chown: %s", lock, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char other[32] = "";
        ssize_t r = pread(fd, other, sizeof(other) - 1, 0);

        if (r > 0)
            other[strcspn(other, "\n")] = '\0';
        if (errno == EWOULDBLOCK || errno == EAGAIN)
            msg_fatal("another chokepointd (pid %s) is using the store %s; "
                      "not starting (its sockets are left alone)",
                      other[0] ? other : "?", cfg->store_path);
        msg_fatal("store lock %s: %s", lock, strerror(errno));
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        msg_warn("store lock %s: cannot write the pid: %s", lock,
                 strerror(errno));
    /* The lock file outlives the daemon: a store that was there and is
     * now missing or empty was lost (a wrong path, a restore gone wrong),
     * and starting empty would forget every block and hold. */
    snprintf(wal, sizeof(wal), "%s-wal", cfg->store_path);
    db = file_size(cfg->store_path);
    w = file_size(wal);
    if (existed && !new_store && db <= 0 && w <= 0)
        msg_fatal("store %s is %s, but %s shows a store was kept here: "
                  "not starting with an empty one (start once with "
                  "--new-store to begin again on purpose)",
                  cfg->store_path, db < 0 ? "missing" : "empty", lock);
    return fd;
}

/* mkdir `dir` 0750 if it is missing; give it to uid:gid if we made it
 * (uid/gid -1: leave), and with a group also set-group-ID (2750): a socket
 * the daemon binds there later, after the drop to daemon.user, is born
 * with that group, so giving it daemon.socket_group needs no privilege
 * (the package's tmpfiles.d entry makes the spool directory the same
 * way). Warn when an existing one is open to everyone. */
static void
make_dir(const char *dir, uid_t uid, gid_t gid, const char *what)
{
    mode_t mode = gid != (gid_t)-1 ? 02750 : 0750;
    struct stat st;

    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode) && (st.st_mode & S_IXOTH))
            msg_warn("%s directory %s is open to every local user (mode "
                     "%04o): make it 0750 with group daemon.socket_group",
                     what, dir, (unsigned)(st.st_mode & 07777));
        return;
    }
    if (errno != ENOENT)
        return; /* the bind or open that follows names the error */
    if (mkdir(dir, 0750) < 0) {
        msg_warn("mkdir %s: %s", dir, strerror(errno));
        return;
    }
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(dir, uid, gid) < 0) {
        msg_warn("chown %s: %s", dir, strerror(errno));
        mode = 0750;
    } else if (mode != 0750 && chmod(dir, mode) < 0) { /* mkdir drops it */
        msg_warn("chmod %s: %s", dir, strerror(errno));
        mode = 0750;
    }
    msg_info("created the %s directory %s (mode %04o)", what, dir,
             (unsigned)mode);
}

/* As root with daemon.user, the store's files become the user's. */
static void
give_store(const struct cp_config *cfg)
{
    static const char *const sfx[] = {"", "-wal", "-shm", ".lock"};
    char path[4096];

    for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        struct stat st;

        snprintf(path, sizeof(path), "%s%s", cfg->store_path, sfx[i]);
        if (stat(path, &st) < 0 || st.st_uid == run.uid)
            continue;
        if (chown(path, run.uid, run.gid) < 0)
            msg_fatal("store %s: cannot give it to daemon.user %s: %s",
                      path, run.name, strerror(errno));
        msg_info("store %s: given to daemon.user %s", path, run.name);
    }
}

void
privs_prepare(const struct cp_config *cfg)
{
    bool drop = run.set && geteuid() == 0;
    uid_t uid = drop ? run.uid : (uid_t)-1;
    gid_t sgid = cfg->socket_group.set ? cfg->socket_group.gid : (gid_t)-1;
    char dir[4096];

    for (size_t i = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].kind == CP_LISTEN_UNIX)
            make_dir(dir_of(cfg->listen[i].path, dir, sizeof(dir)), uid,
                     sgid, "socket");
    if (cfg->milter.spec != NULL && cfg->milter.kind == CP_LISTEN_UNIX)
        make_dir(dir_of(cfg->milter.path, dir, sizeof(dir)), uid, sgid,
                 "socket");
    /* on its own, the admin socket's directory is its readers' */
    make_dir(dir_of(cfg->admin_socket, dir, sizeof(dir)), uid,
             cfg->admin_read_group.set ? cfg->admin_read_group.gid : sgid,
             "socket");
    if (is_memory(cfg->store_path))
        return;
    make_dir(dir_of(cfg->store_path, dir, sizeof(dir)), uid,
             drop ? run.gid : (gid_t)-1, "store");
    if (drop) {
        struct stat st;

        dir_of(cfg->store_path, dir, sizeof(dir));
        if (stat(dir, &st) == 0 && st.st_uid != run.uid &&
            chown(dir, run.uid, run.gid) < 0)
            msg_fatal("store directory %s: cannot give it to daemon.user "
                      "%s: %s",
                      dir, run.name, strerror(errno));
        give_store(cfg);
    }
}

void
privs_drop(const struct cp_config *cfg)
{
    if (geteuid() != 0) {
        if (run.set && run.uid != geteuid())
            msg_warn("daemon.user %s: not started as root, so staying uid "
                     "%lu",
                     run.name, (unsigned long)geteuid());
        return;
    }
    if (!run.set) {
        msg_warn("running as root: set daemon.user (e.g. chokepoint) so "
                 "that the daemon and the commands it runs do not keep "
                 "root's privileges");
        return;
    }
    if (initgroups(run.name, run.gid) < 0 &&
        setgroups(1, &run.gid) < 0)
        msg_fatal("daemon.user %s: setgroups: %s", run.name,
                  strerror(errno));
    if (setgid(run.gid) < 0 || setuid(run.uid) < 0)
        msg_fatal("daemon.user %s: cannot switch to uid %lu gid %lu: %s",
                  run.name, (unsigned long)run.uid,
                  (unsigned long)run.gid, strerror(errno));
    if (setuid(0) == 0)
        msg_panic("daemon.user %s: root could be regained after the drop",
                  run.name);
    msg_info("running as %s (uid %lu, gid %lu)", run.name,
             (unsigned long)run.uid, (unsigned long)run.gid);
}
