/*
 * server.c — listeners: the policy service's unix and TCP sockets from
 * daemon.listen and the milter's (content.milter), and
 * the connection limit (protocol.max_connections: a connection over the
 * limit is accepted and closed at once, logged at most every 10 s, so a
 * flood cannot starve the well-behaved clients already connected).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/msg.h"
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
};

static void
on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;

    if (status < 0) {
        msg_warn("accept on %s: %s", l->name, uv_strerror(status));
        return;
    }
    conn_start(l->d, server, l->milter);
}

/* Remove a stale socket left by a crash; refuse to remove anything else. */
static int
unlink_stale(const char *path)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    return unlink(path) < 0 ? -errno : 0;
}

int
server_unix_bind(uv_loop_t *loop, uv_pipe_t *p, const char *path, int mode)
{
    int rc;

    if ((rc = unlink_stale(path)) < 0) {
        msg_error("%s: %s", path,
                  rc == -EEXIST ? "exists and is not a socket" : strerror(-rc));
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
        if (server_unix_bind(d->loop, &l->h.pipe, s->path, 0666) < 0)
            return -1;
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
    if ((rc = uv_listen(&l->h.stream, 1024, on_connection)) < 0) {
        msg_error("listen %s: %s", s->spec, uv_strerror(rc));
        return -1;
    }
    msg_info("listening on %s%s", s->spec, l->milter ? " (milter)" : "");
    return 0;
}

int
server_listen(struct daemon *d)
{
    bool milter = d->cfg->milter.spec != NULL;

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
    for (size_t i = 0; i < d->nlisteners; i++) {
        uv_handle_t *h = &d->listeners[i].h.handle;

        if (h->data != NULL && !uv_is_closing(h))
            uv_close(h, on_listener_closed);
    }
}
