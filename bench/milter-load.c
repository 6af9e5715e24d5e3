/*
 * milter-load.c — load generator for the milter side (the MTA's half of
 * the protocol, as Postfix speaks it): C connections, each negotiates
 * once and then sends messages back to back for D seconds: the MAIL
 * macros ({auth_authen}, i), MAIL, one body chunk, the EOM macro (i) and
 * EOB, waiting for each reply. Bodies are one of T texts (a campaign's,
 * with a number changed per message) or, with probability 1 - S, a text
 * of their own; each connection sends as one of A logins.
 *
 * Prints: milter conns=C msgs_per_s=X p50_us=Y p99_us=Z (the EOB round
 * trip) and counts of each final reply.
 *
 *   milter-load -s SOCKET [-c CONNS] [-d SECONDS] [-w WARMUP] [-a LOGINS]
 *
 * A benchmark tool: it trusts the server only as far as it must to
 * measure (a short or unexpected reply ends the connection's run).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAXLAT 2000000

static const char *sock_path;
static int conns = 8, seconds = 10, warmup = 2, logins = 1000;
static volatile int phase; /* 0 warm-up, 1 measuring, 2 stop */

struct worker {
    pthread_t t;
    int id;
    uint64_t msgs, replies[256];
    uint32_t *lat;
    size_t nlat;
};

static double
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int
put(char *b, char cmd, const char *data, size_t n)
{
    uint32_t len = (uint32_t)n + 1;

    b[0] = (char)(len >> 24);
    b[1] = (char)(len >> 16);
    b[2] = (char)(len >> 8);
    b[3] = (char)len;
    b[4] = cmd;
    memcpy(b + 5, data, n);
    return (int)n + 5;
}

static int
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
read_all(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);

        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One reply packet; returns its command byte or -1. */
static int
reply(int fd)
{
    char h[5], body[1024];
    uint32_t len;

    if (read_all(fd, h, 5) < 0)
        return -1;
    len = (uint32_t)(unsigned char)h[0] << 24 |
          (uint32_t)(unsigned char)h[1] << 16 |
          (uint32_t)(unsigned char)h[2] << 8 | (unsigned char)h[3];
    if (len == 0 || len - 1 > sizeof(body) || read_all(fd, body, len - 1) < 0)
        return -1;
    return (unsigned char)h[4];
}

static const char *const words[] = {
    "parcel", "delivery", "address", "confirm", "details", "link", "below",
    "hours", "sender", "fee", "reference", "number", "customer", "today",
    "incomplete", "please", "thank", "choosing", "track", "service"};

static size_t
body_text(char *out, size_t cap, unsigned seed, unsigned serial)
{
    size_t n = 0;

    for (int i = 0; i < 300 && n + 32 < cap; i++) {
        seed = seed * 1103515245u + 12345u;
        n += (size_t)snprintf(out + n, cap - n, "%s%s",
                              words[(seed >> 16) % 20],
                              i % 12 == 11 ? "\r\n" : " ");
    }
    n += (size_t)snprintf(out + n, cap - n, "ref %u\r\n", serial);
    return n;
}

static void *
run(void *arg)
{
    struct worker *w = arg;
    struct sockaddr_un sa;
    char buf[8192], pkt[8192 + 64], mac[256];
    int fd, n, r;
    unsigned serial = 0, seed = (unsigned)w->id * 2654435761u;
    static const char optneg[12] = {0, 0, 0, 6, 0, 0, 0x01, (char)0xff,
                                    0, 0x1f, (char)0xff, (char)0xff};

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("connect");
        exit(1);
    }
    n = put(pkt, 'O', optneg, sizeof(optneg));
    if (write_all(fd, pkt, (size_t)n) < 0 || reply(fd) != 'O')
        exit(1);
    n = put(pkt, 'C', "pc.example\0" "4\x00\x19" "192.0.2.7", 24);
    if (write_all(fd, pkt, (size_t)n) < 0 || reply(fd) != 'c')
        exit(1);
    while (phase < 2) {
        unsigned login = (unsigned)(w->id * 7919u + serial) % (unsigned)logins;
        char qid[24];
        int ml;

        snprintf(qid, sizeof(qid), "Q%x.%x", (unsigned)w->id, serial);
        ml = snprintf(mac, sizeof(mac), "M{auth_authen}%cu%u@isp.example%ci%c%s",
                      0, login, 0, 0, qid);
        size_t blen;
        double t0;

        n = put(pkt, 'D', mac, (size_t)ml + 1);
        n += put(pkt + n, 'M', "<x@isp.example>", 16);
        if (write_all(fd, pkt, (size_t)n) < 0 || reply(fd) != 'c')
            break;
        /* 3 in 4 messages: one of 8 campaign texts; else a text of its own */
        seed = seed * 1103515245u + 12345u;
        blen = body_text(buf, sizeof(buf),
                         (seed >> 16) % 4 ? (seed >> 8) % 8 : seed, serial);
        n = put(pkt, 'B', buf, blen);
        if (write_all(fd, pkt, (size_t)n) < 0 || reply(fd) < 0)
            break;
        ml = snprintf(mac, sizeof(mac), "Ei%c%s", 0, qid);
        n = put(pkt, 'D', mac, (size_t)ml + 1);
        n += put(pkt + n, 'E', "", 0);
        t0 = now_us();
        if (write_all(fd, pkt, (size_t)n) < 0 || (r = reply(fd)) < 0)
            break;
        if (phase == 1) {
            double us = now_us() - t0;

            w->msgs++;
            w->replies[r]++;
            if (w->nlat < MAXLAT)
                w->lat[w->nlat++] = (uint32_t)us;
        }
        serial++;
    }
    close(fd);
    return NULL;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    struct worker *w;
    uint32_t *all;
    size_t nall = 0;
    uint64_t msgs = 0, rep[256] = {0};
    int c;

    while ((c = getopt(argc, argv, "s:c:d:w:a:")) != -1) {
        switch (c) {
        case 's': sock_path = optarg; break;
        case 'c': conns = atoi(optarg); break;
        case 'd': seconds = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'a': logins = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: milter-load -s SOCKET [-c N] [-d S] "
                            "[-w S] [-a LOGINS]\n");
            return 2;
        }
    }
    if (sock_path == NULL || conns < 1 || logins < 1)
        return 2;
    w = calloc((size_t)conns, sizeof(*w));
    for (int i = 0; i < conns; i++) {
        w[i].id = i;
        w[i].lat = malloc(sizeof(uint32_t) * MAXLAT);
        pthread_create(&w[i].t, NULL, run, &w[i]);
    }
    sleep((unsigned)warmup);
    phase = 1;
    sleep((unsigned)seconds);
    phase = 2;
    all = malloc(sizeof(uint32_t) * MAXLAT);
    for (int i = 0; i < conns; i++) {
        pthread_join(w[i].t, NULL);
        msgs += w[i].msgs;
        for (int k = 0; k < 256; k++)
            rep[k] += w[i].replies[k];
        for (size_t k = 0; k < w[i].nlat && nall < MAXLAT; k++)
            all[nall++] = w[i].lat[k];
    }
    qsort(all, nall, sizeof(*all), cmp_u32);
    printf("milter conns=%d msgs_per_s=%.0f p50_us=%u p99_us=%u "
           "continue=%llu replycode=%llu other=%llu\n",
           conns, msgs / (double)seconds, nall ? all[nall / 2] : 0,
           nall ? all[nall * 99 / 100] : 0, (unsigned long long)rep['c'],
           (unsigned long long)rep['y'],
           (unsigned long long)(msgs - rep['c'] - rep['y']));
    return 0;
}
