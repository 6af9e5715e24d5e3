/*
 * server.c — listeners: the policy service's unix and TCP sockets from
 * daemon.listen and the milter's (content.milter). A unix socket is 0660,
 * group daemon.socket_group (Postfix's smtpd runs as postfix), in a
 * directory created 0750 if it is missing; whoever connects is still
 * checked (trust.c). The listen backlog is protocol.listen_backlog (the
 * kernel caps it at net.core.somaxconn: a lower cap is logged at start);
 * a queue found full when the loop comes to accept is logged (status:
 * listen_full).
 * Connection limits: conn.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/msg.h"
#include "util/parse.h"
#include "util/xalloc.h"

struct listener {
    union {
        uv_pipe_t pipe;
        uv_tcp_t tcp;
        uv_handle_t handle;
        uv_stream_t stream;
    } h;
    struct daemon *d;
    char *name; /* the listen spec, for logs (the config may be reloaded) */
    char *path; /* unix: to unlink at exit */
    bool milter;
    bool deferred; /* a connection waits: accepted in the next check */
    bool sampled;  /* its queue was looked at in this loop iteration */
};

/*
 * Accepting is bounded per loop iteration (ACCEPT_BUDGET, all listeners
 * together): libuv accepts until the queue is empty, and a flood that
 * reconnects as fast as it is refused would keep the loop in accept(2)
 * while established callers wait. A listener over the budget is left
 * unaccepted (libuv stops watching it) and taken up again after the poll
 * phase, once the ready connections have been read.
 */
#define ACCEPT_BUDGET 64

static void
on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;

    if (status < 0) {
        l->d->stats.accept_errors++;
        peer_warn(l->d, "accept on %s: %s (%zu connections open)", l->name,
                  uv_strerror(status), l->d->nconns);
        return;
    }
    if (!l->sampled) {
        /* at the first accept of an iteration (libuv has taken this one
         * off the queue already): the queue as the kernel held it; at
         * its limit, it refused or dropped connections */
        uint32_t queued, max;

        l->sampled = true;
        if (sockdiag_listen_queue(l->d->diag, server, &queued, &max) == 0 &&
            max > 0 && ++queued >= max) {
            l->d->stats.listen_full++;
            peer_warn(l->d, "%s: listen queue full (%u waiting, limit %u): "
                            "the kernel refuses or drops new connections "
                            "(a flood, or raise protocol.listen_backlog and "
                            "net.core.somaxconn)",
                      l->name, queued, max);
        }
    }
    if (l->d->accept_budget == 0) {
        l->deferred = true;
        return;
    }
    l->d->accept_budget--;
    conn_start(l->d, server, l->milter);
}

static void
on_prepare(uv_prepare_t *p)
{
    struct daemon *d = p->data;

    d->accept_budget = ACCEPT_BUDGET;
}

/* after the poll phase: the listeners that were over the budget take up
 * their waiting connection (which resumes watching them) */
static void
on_check(uv_check_t *c)
{
    struct daemon *d = c->data;

    for (size_t i = 0; i < d->nlisteners; i++) {
        struct listener *l = &d->listeners[i];

        /* the next poll samples its queue again (reset after the poll,
         * not before it: a poll may block for long) */
        l->sampled = false;
        if (l->deferred && !d->stopping && l->name != NULL) {
            l->deferred = false;
            conn_start(d, &l->h.stream, l->milter);
        }
    }
}

/* Is someone accepting connections on the unix socket at `path`? */
static bool
socket_live(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live;

    if (fd < 0)
        return false;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    live = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 ||
           errno == EAGAIN; /* its backlog is full: it is alive */
    close(fd);
    return live;
}

/* Remove a stale socket left by a crash; refuse to remove anything else,
 * and never a socket another process still serves. */
static int
unlink_stale(const char *path)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    if (socket_live(path))
        return -EADDRINUSE;
    return unlink(path) < 0 ? -errno : 0;
}

int
server_unix_bind(uv_loop_t *loop, uv_pipe_t *p, const char *path, int mode)
{
    int rc;

    if ((rc = unlink_stale(path)) < 0) {
        msg_error("%s: %s", path,
                  rc == -EEXIST        ? "exists and is not a socket"
                  : rc == -EADDRINUSE ? "in use by a running process (another "
                                        "chokepointd?); left alone"
                                      : strerror(-rc));
        return -1;
    }
    uv_pipe_init(loop, p, 0);
    if ((rc = uv_pipe_bind(p, path)) < 0) {
        msg_error("bind %s: %s", path, uv_strerror(rc));
        return -1;
    }
    if (chmod(path, (mode_t)mode) < 0) {
        msg_error("chmod %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int
listen_one(struct daemon *d, struct listener *l, const struct cp_listen *s)
{
    int rc;

    l->name = xstrdup(s->spec);
    if (s->kind == CP_LISTEN_UNIX) {
        if (server_unix_bind(d->loop, &l->h.pipe, s->path, 0660) < 0)
            return -1;
        if (d->cfg->socket_group.set &&
            chown(s->path, (uid_t)-1, d->cfg->socket_group.gid) < 0) {
            msg_error("chown %s to group %lu: %s", s->path,
                      (unsigned long)d->cfg->socket_group.gid,
                      strerror(errno));
            return -1;
        }
        l->path = xstrdup(s->path);
    } else {
        struct sockaddr_storage sa;

        if (uv_ip4_addr(s->host, s->port, (struct sockaddr_in *)&sa) != 0 &&
            uv_ip6_addr(s->host, s->port, (struct sockaddr_in6 *)&sa) != 0) {
            msg_error("%s: not a numeric IPv4/IPv6 address", s->spec);
            return -1;
        }
        uv_tcp_init(d->loop, &l->h.tcp);
        uv_tcp_nodelay(&l->h.tcp, 1);
        if ((rc = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&sa, 0)) < 0) {
            msg_error("bind %s: %s", s->spec, uv_strerror(rc));
            return -1;
        }
    }
    l->h.handle.data = l;
    if ((rc = uv_listen(&l->h.stream, (int)d->cfg->listen_backlog,
                        on_connection)) < 0) {
        msg_error("listen %s: %s", s->spec, uv_strerror(rc));
        return -1;
    }
    msg_info("listening on %s%s", s->spec, l->milter ? " (milter)" : "");
    return 0;
}

/* The kernel silently caps a listen backlog at net.core.somaxconn. */
static void
check_somaxconn(const struct cp_config *cfg)
{
    FILE *fp = fopen("/proc/sys/net/core/somaxconn", "r");
    char line[32];
    uint64_t max;

    if (fp == NULL)
        return;
    if (fgets(line, sizeof(line), fp) != NULL &&
        parse_u64(line, strcspn(line, "\n"), &max) &&
        max < cfg->listen_backlog)
        msg_warn("protocol.listen_backlog %u is capped by the kernel at "
                 "net.core.somaxconn = %llu (raise it with sysctl to queue "
                 "more connections in a burst)",
                 cfg->listen_backlog, (unsigned long long)max);
    fclose(fp);
}

int
server_listen(struct daemon *d)
{
    bool milter = d->cfg->milter.spec != NULL;

    check_somaxconn(d->cfg);
    uv_prepare_init(d->loop, &d->accept_prep);
    uv_check_init(d->loop, &d->accept_check);
    d->accept_prep.data = d->accept_check.data = d;
    uv_prepare_start(&d->accept_prep, on_prepare);
    uv_check_start(&d->accept_check, on_check);
    d->accept_budget = ACCEPT_BUDGET;

    d->nlisteners = d->cfg->nlisten + milter;
    d->listeners = xcalloc(d->nlisteners, sizeof(*d->listeners));
    for (size_t i = 0; i < d->nlisteners; i++) {
        bool m = i == d->cfg->nlisten;

        d->listeners[i].d = d;
        d->listeners[i].milter = m;
        if (listen_one(d, &d->listeners[i],
                       m ? &d->cfg->milter : &d->cfg->listen[i]) < 0)
            return -1;
    }
    return 0;
}

static void
on_listener_closed(uv_handle_t *h)
{
    struct listener *l = h->data;

    if (l->path) {
        unlink(l->path);
        free(l->path);
        l->path = NULL;
    }
    free(l->name);
    l->name = NULL;
}

void
server_close(struct daemon *d)
{
    if (uv_is_active((uv_handle_t *)&d->accept_prep)) {
        uv_close((uv_handle_t *)&d->accept_prep, NULL);
        uv_close((uv_handle_t *)&d->accept_check, NULL);
    }
    for (size_t i = 0; i < d->nlisteners; i++) {
        uv_handle_t *h = &d->listeners[i].h.handle;

        if (h->data != NULL && !uv_is_closing(h))
            uv_close(h, on_listener_closed);
    }
}
