/*
 * trust.c — who is calling, and may they speak for customers?
 *
 * Every request names the account it charges (sasl_username,
 * client_address), so a caller that can connect can get any customer
 * throttled or blocked. Only the MTA may connect:
 *
 *   unix sockets  the caller's uid (SO_PEERCRED) must be in
 *                 daemon.trusted_users (root and the daemon's own user
 *                 always are);
 *   TCP           the caller's address must be in daemon.trusted_networks,
 *                 and when the connecting socket is on this host (loopback
 *                 or one of its addresses: found with the kernel's
 *                 sock_diag interface, sockdiag.c) its owner's uid must be
 *                 trusted too:
 *                 on loopback every local user has the same address.
 *
 * A caller on another host is known by its address only. Each caller also
 * has a share key (its uid when known, else its address) for the per-peer
 * connection limit (conn.c).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/hmap.h"

static bool
uid_trusted(const struct cp_config *cfg, uid_t uid)
{
    if (uid == geteuid()) /* the daemon's own (daemon.user) */
        return true;
    for (size_t i = 0; i < cfg->ntrusted_uids; i++)
        if (cfg->trusted_uids[i] == uid)
            return true;
    return false;
}

static bool
addr_trusted(const struct cp_config *cfg, const struct inet_addr *a)
{
    for (size_t i = 0; i < cfg->ntrusted_nets; i++) {
        struct inet_addr m = *a;
        const struct cp_prefix *p = &cfg->trusted_nets[i];

        if (p->addr.family != a->family)
            continue;
        inet_mask(&m, p->plen);
        if (memcmp(m.bytes, p->addr.bytes, 16) == 0)
            return true;
    }
    return false;
}

/* The peer's address as an inet_addr (a v4-mapped IPv6 address as IPv4). */
static void
peer_addr(const struct sockaddr_storage *sa, struct inet_addr *a,
          uint16_t *port)
{
    memset(a, 0, sizeof(*a));
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

        a->family = 4;
        memcpy(a->bytes, &s4->sin_addr, 4);
        *port = ntohs(s4->sin_port);
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

        *port = ntohs(s6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            a->family = 4;
            memcpy(a->bytes, s6->sin6_addr.s6_addr + 12, 4);
        } else {
            a->family = 6;
            memcpy(a->bytes, &s6->sin6_addr, 16);
        }
    }
}

static const char *
check_tcp(struct sockdiag *t, const struct cp_config *cfg, uv_tcp_t *s,
          uint64_t seq, struct peer *p)
{
    struct sockaddr_storage sa, la;
    int len = sizeof(sa), llen = sizeof(la), rc;
    char host[INET6_ADDRSTRLEN];

    if (uv_tcp_getpeername(s, (struct sockaddr *)&sa, &len) != 0 ||
        uv_tcp_getsockname(s, (struct sockaddr *)&la, &llen) != 0 ||
        (sa.ss_family != AF_INET && sa.ss_family != AF_INET6)) {
        snprintf(p->name, sizeof(p->name), "tcp#%llu",
                 (unsigned long long)seq);
        return "its address is unknown";
    }
    p->tcp = true;
    peer_addr(&sa, &p->addr, &p->port);
    inet_ntop(p->addr.family == 4 ? AF_INET : AF_INET6, p->addr.bytes, host,
              sizeof(host));
    rc = sockdiag_tcp_uid(t, &sa, &la, &p->uid);
    p->has_uid = rc == 1;
    if (p->has_uid)
        snprintf(p->name, sizeof(p->name), "tcp:%s:%u uid=%lu", host,
                 p->port, (unsigned long)p->uid);
    else
        snprintf(p->name, sizeof(p->name), "tcp:%s:%u", host, p->port);
    p->share = p->has_uid ? hmap_hash(&p->uid, sizeof(p->uid)) ^ 1
                          : hmap_hash(&p->addr, sizeof(p->addr));
    if (!addr_trusted(cfg, &p->addr))
        return "its address is not in daemon.trusted_networks";
    if (rc < 0)
        return "its uid could not be looked up (sock_diag)";
    if (p->has_uid && !uid_trusted(cfg, p->uid))
        return "its uid is not in daemon.trusted_users";
    return NULL;
}

static const char *
check_unix(const struct cp_config *cfg, uv_pipe_t *s, uint64_t seq,
           struct peer *p)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    uv_os_fd_t fd;

    if (uv_fileno((uv_handle_t *)s, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        snprintf(p->name, sizeof(p->name), "unix#%llu",
                 (unsigned long long)seq);
        return "its credentials are unknown";
    }
    p->has_uid = true;
    p->uid = cred.uid;
    snprintf(p->name, sizeof(p->name), "unix#%llu uid=%lu pid=%ld",
             (unsigned long long)seq, (unsigned long)cred.uid,
             (long)cred.pid);
    p->share = hmap_hash(&p->uid, sizeof(p->uid)) ^ 1;
    if (!uid_trusted(cfg, cred.uid))
        return "its uid is not in daemon.trusted_users";
    return NULL;
}

const char *
trust_check(struct sockdiag *t, const struct cp_config *cfg, uv_stream_t *s,
            uint64_t seq, struct peer *p)
{
    memset(p, 0, sizeof(*p));
    if (s->type == UV_TCP)
        return check_tcp(t, cfg, (uv_tcp_t *)s, seq, p);
    return check_unix(cfg, (uv_pipe_t *)s, seq, p);
}
