/*
 * sockdiag.c — questions to the kernel about sockets, over one
 * NETLINK_SOCK_DIAG socket (opened before the privilege drop; the answers
 * need no privilege): who owns the TCP socket at the other end of a local
 * connection (trust.c), and how full a listener's accept queue is
 * (server.c). One fixed-size request and one answer each, on the loop
 * thread (doc/design.md, "What is hand-written").
 */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/msg.h"
#include "util/xalloc.h"

struct sockdiag {
    int nl; /* -1: not open (TCP peers then refused) */
    uint32_t seq;
};

struct sockdiag *
sockdiag_open(void)
{
    struct sockdiag *t = xcalloc(1, sizeof(*t));

    t->nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (t->nl < 0)
        msg_warn("sock_diag: %s: TCP callers on this host cannot be "
                 "identified and will be refused",
                 strerror(errno));
    return t;
}

void
sockdiag_close(struct sockdiag *t)
{
    if (t == NULL)
        return;
    if (t->nl >= 0)
        close(t->nl);
    free(t);
}

/* Send `req` (a request of `len` bytes whose header is filled here but
 * for its type-specific part) and read its answer into ans. 0, or -1. */
static int
ask(struct sockdiag *t, struct nlmsghdr *req, size_t len, char *ans,
    size_t anssz, ssize_t *n)
{
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};

    if (t->nl < 0)
        return -1;
    req->nlmsg_len = (uint32_t)len;
    req->nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req->nlmsg_flags = NLM_F_REQUEST;
    req->nlmsg_seq = ++t->seq;
    if (sendto(t->nl, req, len, 0, (struct sockaddr *)&kernel,
               sizeof(kernel)) < 0)
        return -1;
    for (;;) {
        const struct nlmsghdr *h = (const struct nlmsghdr *)ans;

        *n = recv(t->nl, ans, anssz, 0);
        if (*n < 0 && errno == EINTR)
            continue;
        if (*n < (ssize_t)sizeof(struct nlmsghdr) || !NLMSG_OK(h, (size_t)*n))
            return -1;
        if (h->nlmsg_seq == t->seq)
            return 0; /* (an answer to an earlier, abandoned question: skip) */
    }
}

/* Fill an inet_diag id's address from a sockaddr (a v4-mapped IPv6
 * address is looked up as what it is: the kernel handles the mapping). */
static void
diag_addr(const struct sockaddr_storage *sa, __be32 out[4], __be16 *port)
{
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

        memcpy(out, &s4->sin_addr, 4);
        *port = s4->sin_port;
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

        memcpy(out, &s6->sin6_addr, 16);
        *port = s6->sin6_port;
    }
}

int
sockdiag_tcp_uid(struct sockdiag *t, const struct sockaddr_storage *peer,
                 const struct sockaddr_storage *local, uid_t *uid)
{
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 r;
    } req;
    union {
        struct nlmsghdr nlh;
        char buf[1024];
    } ans;
    ssize_t n;

    memset(&req, 0, sizeof(req));
    req.r.sdiag_family = (uint8_t)peer->ss_family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = ~0U;
    /* the caller's socket: its local end is our peer */
    diag_addr(peer, req.r.id.idiag_src, &req.r.id.idiag_sport);
    diag_addr(local, req.r.id.idiag_dst, &req.r.id.idiag_dport);
    req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    if (ask(t, &req.nlh, sizeof(req), ans.buf, sizeof(ans), &n) < 0)
        return -1;
    if (ans.nlh.nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(&ans.nlh);

        return e->error == -ENOENT ? 0 : -1;
    }
    if (ans.nlh.nlmsg_type == SOCK_DIAG_BY_FAMILY &&
        ans.nlh.nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
        const struct inet_diag_msg *m = NLMSG_DATA(&ans.nlh);

        /* a listener that would take such a packet is not the caller */
        if (m->idiag_state == TCP_LISTEN)
            return 0;
        *uid = m->idiag_uid;
        return 1;
    }
    return -1;
}

/* A unix listener's queue: UNIX_DIAG_RQLEN by the socket's inode. */
static int
unix_queue(struct sockdiag *t, int fd, uint32_t *queued, uint32_t *max)
{
    struct {
        struct nlmsghdr nlh;
        struct unix_diag_req r;
    } req;
    union {
        struct nlmsghdr nlh;
        char buf[1024];
    } ans;
    struct stat st;
    ssize_t n;

    if (fstat(fd, &st) < 0)
        return -1;
    memset(&req, 0, sizeof(req));
    req.r.sdiag_family = AF_UNIX;
    req.r.udiag_states = 1u << TCP_LISTEN;
    req.r.udiag_ino = (uint32_t)st.st_ino;
    req.r.udiag_show = UDIAG_SHOW_RQLEN;
    req.r.udiag_cookie[0] = INET_DIAG_NOCOOKIE;
    req.r.udiag_cookie[1] = INET_DIAG_NOCOOKIE;
    if (ask(t, &req.nlh, sizeof(req), ans.buf, sizeof(ans), &n) < 0 ||
        ans.nlh.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
        ans.nlh.nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
        return -1;
    {
        const struct unix_diag_msg *m = NLMSG_DATA(&ans.nlh);
        const struct rtattr *a = (const struct rtattr *)(m + 1);
        size_t left = ans.nlh.nlmsg_len - NLMSG_LENGTH(sizeof(*m));

        for (; RTA_OK(a, left); a = RTA_NEXT(a, left))
            if (a->rta_type == UNIX_DIAG_RQLEN &&
                RTA_PAYLOAD(a) >= sizeof(struct unix_diag_rqlen)) {
                const struct unix_diag_rqlen *q = RTA_DATA(a);

                *queued = q->udiag_rqueue;
                *max = q->udiag_wqueue;
                return 0;
            }
    }
    return -1;
}

int
sockdiag_listen_queue(struct sockdiag *t, uv_stream_t *s, uint32_t *queued,
                      uint32_t *max)
{
    uv_os_fd_t fd;

    if (uv_fileno((uv_handle_t *)s, &fd) != 0)
        return -1;
    if (s->type == UV_TCP) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);

        /* on a listener: unacked is the accept queue, sacked its limit */
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
            return -1;
        *queued = ti.tcpi_unacked;
        *max = ti.tcpi_sacked;
        return 0;
    }
    return unix_queue(t, fd, queued, max);
}
