/*
 * tlsrelay.c — see tlsrelay.h. TLS itself (handshake, records,
 * certificate and name verification) is OpenSSL's; this file only opens
 * the connections and moves bytes between the two sockets of each.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "store/tlsrelay.h"
#include "util/msg.h"
#include "util/tlspem.h"
#include "util/xalloc.h"

/* servers (a Cluster's nodes, Sentinels, and the addresses a failover
 * moved them to: a target is kept for the daemon's life) */
#define MAX_TARGETS 256
#define RELAY_BUF 16384
#define WHY_MAX 256

/* One relayed connection: hiredis's end (ufd), the server's (tfd). */
struct relayed {
    struct target *t;
    int ufd, tfd;
    pthread_t th;
    bool done; /* its thread has finished: join it */
    struct relayed *next;
};

/* A server, and the local socket that reaches it. */
struct target {
    struct tls_relay *r;
    char host[256];
    int port;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int lfd;
    pthread_t th;
    char why[WHY_MAX]; /* the last failure ("" : none) */
    char logged[WHY_MAX];
    time_t logged_at;
};

struct tls_relay {
    SSL_CTX *ctx;
    char name[256]; /* the name the certificates must carry; "": the host */
    int timeout_ms;
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path) - 16];
    pthread_mutex_t mu;
    struct target *t[MAX_TARGETS];
    int nt;
    struct relayed *conns;
    bool stopping;
};

/* Directories a daemon killed before its exit left next to the store
 * (this one holds the store's lock: none is in use), with their
 * sockets: those named like `pattern` ("DIR/redis-tls.XXXXXX"). */
static void
clean_stale(const char *pattern)
{
    char dir[PATH_MAX], sub[PATH_MAX + 256];
    const char *slash = strrchr(pattern, '/'), *base;
    size_t bl;
    DIR *d, *in;
    struct dirent *e, *f;

    if (slash == NULL || (size_t)(slash - pattern) >= sizeof(dir))
        return;
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - pattern), pattern);
    base = slash + 1;
    bl = strlen(base) - 6; /* "redis-tls." without the XXXXXX */
    if (strncmp(dir, "/tmp", 5) == 0 || (d = opendir(dir)) == NULL)
        return; /* (in /tmp the names are not ours alone) */
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, base, bl) != 0 ||
            strlen(e->d_name) != bl + 6)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
        if ((in = opendir(sub)) != NULL) {
            while ((f = readdir(in)) != NULL) {
                char sock[PATH_MAX + 512];
                size_t n = strlen(f->d_name);

                if (n > 5 && strcmp(f->d_name + n - 5, ".sock") == 0) {
                    snprintf(sock, sizeof(sock), "%s/%s", sub, f->d_name);
                    unlink(sock);
                }
            }
            closedir(in);
        }
        rmdir(sub);
    }
    closedir(d);
}

struct tls_relay *
tls_relay_new(const struct cp_config *cfg, char *err)
{
    struct tls_relay *t = xcalloc(1, sizeof(*t));
    const char *slash = cfg->store_path ? strrchr(cfg->store_path, '/')
                                        : NULL;
    size_t dl = slash ? (size_t)(slash - cfg->store_path) : 0;

    if ((t->ctx = tls_pem_ctx(cfg->redis_tls_ca_pem, cfg->redis_tls_ca_len,
                              cfg->redis_tls_cert_pem, cfg->redis_tls_cert_len,
                              cfg->redis_tls_key_pem, cfg->redis_tls_key_len,
                              NULL, err, CP_ERR_MAX)) == NULL) {
        free(t);
        return NULL;
    }
    snprintf(t->name, sizeof(t->name), "%s", cfg->redis_tls_name);
    t->timeout_ms = cfg->redis_connect_timeout_ms > INT_MAX
                        ? INT_MAX
                        : (int)cfg->redis_connect_timeout_ms;
    /* next to the store (private to the daemon), or in /tmp when that
     * path is too long for a socket's */
    if (slash != NULL && dl + sizeof("/redis-tls.XXXXXX") < sizeof(t->dir))
        snprintf(t->dir, sizeof(t->dir), "%.*s/redis-tls.XXXXXX", (int)dl,
                 cfg->store_path);
    else
        snprintf(t->dir, sizeof(t->dir), "/tmp/chokepoint-tls.XXXXXX");
    clean_stale(t->dir);
    if (mkdtemp(t->dir) == NULL) { /* (mode 0700) */
        snprintf(err, CP_ERR_MAX, "fleet store TLS: cannot make %s: %s",
                 t->dir, strerror(errno));
        SSL_CTX_free(t->ctx);
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

/* ---- one relayed connection ---- */

static void
set_why(struct target *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record why; log it unless it was the last logged in the last minute. */
static void
set_why(struct target *t, const char *fmt, ...)
{
    struct tls_relay *r = t->r;
    char why[WHY_MAX];
    time_t now = time(NULL);
    bool log;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&r->mu);
    memcpy(t->why, why, sizeof(why));
    log = !r->stopping &&
          (strcmp(t->logged, why) != 0 || now - t->logged_at >= 60);
    if (log) {
        memcpy(t->logged, why, sizeof(why));
        t->logged_at = now;
    }
    pthread_mutex_unlock(&r->mu);
    if (log)
        msg_warn("fleet store %s:%d: TLS: %s", t->host, t->port, why);
}

/* poll one fd for ev until the deadline (ms since the epoch of
 * CLOCK_MONOTONIC; 0: none); > 0 ready, 0 timed out, < 0 error */
static int
wait_fd(int fd, short ev, int64_t deadline)
{
    struct pollfd p = {fd, ev, 0};
    int ms = -1, n;

    for (;;) {
        if (deadline > 0) {
            struct timespec ts;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            ms = (int)(deadline - ((int64_t)ts.tv_sec * 1000 +
                                   ts.tv_nsec / 1000000));
            if (ms <= 0)
                return 0;
        }
        n = poll(&p, 1, ms);
        if (n >= 0 || errno != EINTR)
            return n > 0 && (p.revents & POLLNVAL) ? -1 : n;
    }
}

static int64_t
deadline_in(int ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + ms;
}

/* A TCP connection to the target, non-blocking; -1 (why set). */
static int
tcp_connect(struct relayed *c, int64_t deadline)
{
    struct target *t = c->t;
    struct addrinfo hints = {0}, *ai, *a;
    char port[16];
    int fd = -1, rc, one = 1;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", t->port);
    if ((rc = getaddrinfo(t->host, port, &hints, &ai)) != 0) {
        set_why(t, "cannot resolve: %s", gai_strerror(rc));
        return -1;
    }
    for (a = ai; a != NULL; a = a->ai_next) {
        int e = 0;
        socklen_t el = sizeof(e);

        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK |
                                      SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&t->r->mu);
        c->tfd = fd; /* (so that stopping wakes the wait) */
        if (t->r->stopping) {
            c->tfd = -1;
            pthread_mutex_unlock(&t->r->mu);
            close(fd);
            freeaddrinfo(ai);
            return -1;
        }
        pthread_mutex_unlock(&t->r->mu);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
            (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) > 0 &&
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0))
            break;
        set_why(t, "cannot connect: %s",
                e ? strerror(e) : errno == EINPROGRESS ? "timed out"
                                                       : strerror(errno));
        pthread_mutex_lock(&t->r->mu);
        c->tfd = -1;
        pthread_mutex_unlock(&t->r->mu);
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        /* a server that stops reading or answering: the connection is
         * given up (and made again) instead of holding its thread */
        unsigned user_timeout = 30000;

        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout,
                   sizeof(user_timeout));
    }
    return fd;
}

/* Wait for what an SSL call wants; false on a failure (why set). */
static bool
ssl_wait(struct relayed *c, SSL *s, int rc, int64_t deadline,
         const char *doing)
{
    int e = SSL_get_error(s, rc);
    unsigned long q;
    char buf[160];

    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (wait_fd(c->tfd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
                    deadline) > 0)
            return true;
        set_why(c->t, "%s: timed out", doing);
        return false;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        set_why(c->t, "%s: closed by the server", doing);
        return false;
    }
    if (SSL_get_verify_result(s) != X509_V_OK) {
        set_why(c->t, "%s: the server's certificate: %s", doing,
                X509_verify_cert_error_string(SSL_get_verify_result(s)));
    } else if ((q = ERR_peek_error()) != 0) {
        ERR_error_string_n(q, buf, sizeof(buf));
        set_why(c->t, "%s: %s", doing, buf);
    } else {
        set_why(c->t, "%s: %s", doing,
                e == SSL_ERROR_SYSCALL && errno ? strerror(errno)
                                                : "connection closed");
    }
    ERR_clear_error();
    return false;
}

/* The handshake, with the checks of the server's name or address. */
static SSL *
tls_open(struct relayed *c, int64_t deadline)
{
    struct tls_relay *r = c->t->r;
    const char *name = r->name[0] ? r->name : c->t->host;
    unsigned char addr[16];
    SSL *s = SSL_new(r->ctx);
    int rc;

    if (s == NULL || SSL_set_fd(s, c->tfd) != 1) {
        set_why(c->t, "out of memory");
        SSL_free(s);
        return NULL;
    }
    /* the name or address the certificate must carry: if it cannot be
     * set, no connection (never the chain alone) */
    if ((inet_pton(AF_INET, name, addr) == 1 ||
         inet_pton(AF_INET6, name, addr) == 1)
            ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), name) != 1
            : SSL_set_tlsext_host_name(s, name) != 1 ||
                  SSL_set1_host(s, name) != 1) {
        set_why(c->t, "cannot check the name %s", name);
        ERR_clear_error();
        SSL_free(s);
        return NULL;
    }
    while ((rc = SSL_connect(s)) != 1)
        if (!ssl_wait(c, s, rc, deadline, "handshake")) {
            SSL_free(s);
            return NULL;
        }
    return s;
}

static bool
send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Bytes both ways until either side closes. */
static void
pump(struct relayed *c, SSL *s)
{
    char buf[RELAY_BUF];

    for (;;) {
        struct pollfd p[2] = {{c->ufd, POLLIN, 0}, {c->tfd, POLLIN, 0}};

        if (SSL_pending(s) == 0 && poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (SSL_pending(s) > 0 || p[1].revents) {
            for (;;) { /* what the server sent, record by record */
                int n = SSL_read(s, buf, sizeof(buf));

                if (n > 0) {
                    if (!send_all(c->ufd, buf, (size_t)n))
                        return;
                    continue;
                }
                if (SSL_get_error(s, n) == SSL_ERROR_WANT_READ)
                    break;
                if (SSL_get_error(s, n) == SSL_ERROR_WANT_WRITE) {
                    if (wait_fd(c->tfd, POLLOUT, 0) > 0)
                        continue;
                }
                (void)ssl_wait(c, s, n, 0, "reading");
                return;
            }
        }
        if (p[0].revents) { /* hiredis's commands */
            ssize_t n = recv(c->ufd, buf, sizeof(buf), 0);
            int w;

            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return; /* hiredis closed it */
            while ((w = SSL_write(s, buf, (int)n)) <= 0)
                if (!ssl_wait(c, s, w, 0, "writing"))
                    return;
        }
    }
}

static void *
relay_main(void *arg)
{
    struct relayed *c = arg;
    struct tls_relay *r = c->t->r;
    int64_t deadline = deadline_in(r->timeout_ms > 0 ? r->timeout_ms : 1000);
    SSL *s = NULL;

    if (tcp_connect(c, deadline) >= 0 && (s = tls_open(c, deadline)) != NULL) {
        pthread_mutex_lock(&r->mu);
        c->t->why[0] = '\0';
        pthread_mutex_unlock(&r->mu);
        pump(c, s);
        SSL_shutdown(s); /* (one attempt: the socket does not block) */
        SSL_free(s);
    }
    ERR_clear_error();
    pthread_mutex_lock(&r->mu);
    if (c->tfd >= 0)
        close(c->tfd);
    close(c->ufd);
    c->tfd = c->ufd = -1;
    c->done = true;
    pthread_mutex_unlock(&r->mu);
    /* (per-thread OpenSSL state is freed at the thread's exit) */
    return NULL;
}

/* Join the threads of connections that ended (r->mu held). */
static void
reap(struct tls_relay *r)
{
    struct relayed **pp = &r->conns;

    while (*pp != NULL) {
        struct relayed *c = *pp;

        if (!c->done) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        pthread_join(c->th, NULL);
        free(c);
    }
}

/* Threads start with every signal blocked: the loop thread takes them. */
static int
start_thread(pthread_t *th, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(th, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static void *
accept_main(void *arg)
{
    struct target *t = arg;
    struct tls_relay *r = t->r;

    for (;;) {
        int fd = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC);
        struct relayed *c;

        pthread_mutex_lock(&r->mu);
        if (r->stopping) {
            pthread_mutex_unlock(&r->mu);
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        reap(r);
        pthread_mutex_unlock(&r->mu);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                usleep(100000); /* (out of descriptors: try again) */
            continue;
        }
        c = xcalloc(1, sizeof(*c));
        c->t = t;
        c->ufd = fd;
        c->tfd = -1;
        pthread_mutex_lock(&r->mu);
        if (r->stopping || start_thread(&c->th, relay_main, c) != 0) {
            bool stopping = r->stopping;

            pthread_mutex_unlock(&r->mu);
            close(fd);
            free(c);
            if (stopping)
                return NULL;
            set_why(t, "cannot start a thread");
            continue;
        }
        c->next = r->conns;
        r->conns = c;
        pthread_mutex_unlock(&r->mu);
    }
}

/* ---- the targets ---- */

static struct target *
find(struct tls_relay *r, const char *host, int port)
{
    for (int i = 0; i < r->nt; i++)
        if (r->t[i]->port == port && strcmp(r->t[i]->host, host) == 0)
            return r->t[i];
    return NULL;
}

const char *
tls_relay_path(struct tls_relay *r, const char *host, int port, char *err)
{
    struct sockaddr_un sa = {0};
    struct target *t = find(r, host, port);

    if (t != NULL)
        return t->path;
    if (r->nt >= MAX_TARGETS) {
        snprintf(err, CP_ERR_MAX, "fleet store TLS: more than %d servers",
                 MAX_TARGETS);
        return NULL;
    }
    t = xcalloc(1, sizeof(*t));
    t->r = r;
    snprintf(t->host, sizeof(t->host), "%s", host);
    t->port = port;
    snprintf(t->path, sizeof(t->path), "%s/%d.sock", r->dir, r->nt);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, t->path, sizeof(sa.sun_path));
    t->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (t->lfd < 0 || bind(t->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(t->lfd, 16) < 0 ||
        (errno = start_thread(&t->th, accept_main, t)) != 0) {
        snprintf(err, CP_ERR_MAX, "fleet store TLS: cannot listen on %s: %s",
                 t->path, strerror(errno));
        if (t->lfd >= 0)
            close(t->lfd);
        unlink(t->path);
        free(t);
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    r->t[r->nt++] = t;
    pthread_mutex_unlock(&r->mu);
    return t->path;
}

void
tls_relay_why(struct tls_relay *r, const char *host, int port, char *out,
              size_t n)
{
    struct target *t;

    pthread_mutex_lock(&r->mu);
    t = find(r, host, port);
    snprintf(out, n, "%s", t != NULL ? t->why : "");
    pthread_mutex_unlock(&r->mu);
}

void
tls_relay_free(struct tls_relay *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    for (int i = 0; i < r->nt; i++)
        shutdown(r->t[i]->lfd, SHUT_RDWR); /* (accept returns) */
    for (struct relayed *c = r->conns; c != NULL; c = c->next) {
        if (c->ufd >= 0)
            shutdown(c->ufd, SHUT_RDWR);
        if (c->tfd >= 0)
            shutdown(c->tfd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->nt; i++) /* (no connection starts after) */
        pthread_join(r->t[i]->th, NULL);
    while (r->conns != NULL) { /* (they use their target to the end) */
        struct relayed *c = r->conns;

        r->conns = c->next;
        pthread_join(c->th, NULL);
        free(c);
    }
    for (int i = 0; i < r->nt; i++) {
        close(r->t[i]->lfd);
        unlink(r->t[i]->path);
        free(r->t[i]);
    }
    rmdir(r->dir);
    SSL_CTX_free(r->ctx);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
