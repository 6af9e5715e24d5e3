/*
 * fuzz_milter.c — libFuzzer target for the milter codec. The first input
 * byte sets how many bytes arrive per read; the rest is the stream from the
 * MTA. It is framed the way the daemon frames it, from a window that grows
 * by that step, and each framed packet, whatever its command byte, goes
 * through every decoder. Framing and the string decoders are checked
 * against simple oracles, every decoded string must lie inside its packet,
 * and decoded bytes are fed back as reply and quarantine text, whose
 * packets must be one well-formed 'y' (or 'q') with a sanitised line.
 *
 * The window and each packet are copied to buffers of their exact size, so
 * AddressSanitizer catches any read past what the codec was given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/milter.h"
#include "util/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c))                                                              \
            msg_panic("%s:%d: check failed: %s", __FILE__, __LINE__, #c);      \
    } while (0)

static uint32_t
get32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
           (uint32_t)b[3];
}

static size_t
count_nul(const unsigned char *b, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        k += b[i] == '\0';
    return k;
}

/* s is inside the packet and followed there by its NUL. */
static void
check_in(const struct cp_milter_pkt *p, struct str s)
{
    const unsigned char *b = (const unsigned char *)s.p;

    CHECK(b >= p->data && s.len < p->len);
    CHECK((size_t)(b - p->data) + s.len < p->len);
    CHECK(b[s.len] == '\0');
    CHECK(memchr(b, '\0', s.len) == NULL);
}

struct mac_ctx {
    const struct cp_milter_pkt *p;
    int calls;
};

static void
on_macro(void *arg, const char *name, size_t nlen, const char *value,
         size_t vlen)
{
    struct mac_ctx *m = arg;
    struct str n = {name, nlen}, v = {value, vlen};

    check_in(m->p, n);
    check_in(m->p, v);
    CHECK(value == name + nlen + 1);
    (void)cp_milter_macro_is(name, nlen, "auth_authen");
    (void)cp_milter_macro_is(name, nlen, "{i}");
    m->calls++;
}

static void
check_macros(const struct cp_milter_pkt *p)
{
    struct mac_ctx m = {p, 0};
    char stage = 0;
    int n = cp_milter_macros(p, &stage, on_macro, &m);
    bool ok = p->len >= 1 &&
              (p->len == 1 || (p->data[p->len - 1] == '\0' &&
                               count_nul(p->data + 1, p->len - 1) % 2 == 0));

    if (!ok) {
        CHECK(n == -1 && m.calls == 0);
        return;
    }
    CHECK(n >= 0 && (size_t)n == count_nul(p->data + 1, p->len - 1) / 2);
    CHECK(m.calls == n && stage == (char)p->data[0]);
}

static void
check_strings(const struct cp_milter_pkt *p)
{
    struct str s, v;
    bool terminated = p->len > 0 && p->data[p->len - 1] == '\0';
    size_t nuls = count_nul(p->data, p->len);
    int n = cp_milter_first_arg(p, &s);

    if (terminated) {
        CHECK(n >= 0 && (size_t)n + 1 == nuls);
        check_in(p, s);
        CHECK(s.p == (const char *)p->data);
    } else {
        CHECK(n == -1);
    }
    n = cp_milter_header(p, &s, &v);
    CHECK((n == 0) == (terminated && nuls == 2 && p->data[0] != '\0'));
    if (n == 0) {
        check_in(p, s);
        check_in(p, v);
    }
}

static void
check_connect(const struct cp_milter_pkt *p)
{
    struct str host, addr;
    uint16_t port;
    char fam;

    if (cp_milter_connect(p, &host, &fam, &port, &addr) != 0)
        return;
    check_in(p, host);
    CHECK(strchr("46LU", fam) != NULL && fam != '\0');
    if (fam == 'U') {
        CHECK(addr.len == 0 && port == 0);
        CHECK(host.len + 2 == p->len);
    } else {
        check_in(p, addr);
        CHECK(host.len + 1 + 1 + 2 + addr.len + 1 == p->len);
    }
}

static void
check_optneg(const struct cp_milter_pkt *p)
{
    uint32_t v, a, pr, v2, a2, pr2;
    unsigned char out[CP_MILTER_OPTNEG_PKT];
    struct cp_milter_pkt q;

    if (cp_milter_optneg(p, &v, &a, &pr) != 0) {
        CHECK(p->len < 12);
        return;
    }
    CHECK(p->len >= 12);
    CHECK(cp_milter_put_optneg(out, sizeof(out), v, a, pr) == sizeof(out));
    CHECK(cp_milter_frame(out, sizeof(out), CP_MILTER_MAX, &q) ==
          sizeof(out));
    CHECK(q.cmd == 'O' && cp_milter_optneg(&q, &v2, &a2, &pr2) == 0);
    CHECK(v == v2 && a == a2 && pr == pr2);
}

/* The reply text as cp_milter_put_reply() must write it before any cut. */
static size_t
expect_text(char *dst, const unsigned char *t, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = t[i];

        if (c < 0x20 || c >= 0x7f) /* 7-bit printable */
            c = c >= 0x80 ? '?' : ' ';
        dst[k++] = (char)c;
        if (c == '%')
            dst[k++] = '%';
    }
    return k;
}

static void
check_reply(const unsigned char *text, size_t tlen, unsigned char sel)
{
    static const char *codes[][2] = {
        {"550", "5.7.1"},
        {"451", "4.7.1"},
        {"421", "4.3.2"},
        {"554", "5.123.456"},
    };
    const char *code = codes[sel % 4][0], *dsn = codes[sel % 4][1];
    unsigned char out[CP_MILTER_REPLY_PKT_MAX];
    char *want = malloc(2 * tlen + 1);
    size_t head = strlen(code) + 1 + strlen(dsn), wlen, slen;
    struct cp_milter_pkt p;
    const char *s;
    int n;

    CHECK(want != NULL);
    n = cp_milter_put_reply(out, sizeof(out), code, dsn, (const char *)text,
                            tlen);
    CHECK(n > 0 && cp_milter_frame(out, (size_t)n, CP_MILTER_MAX, &p) == n);
    CHECK(p.cmd == 'y' && p.len >= 1 && p.data[p.len - 1] == '\0');
    CHECK(memchr(p.data, '\0', p.len - 1) == NULL);
    s = (const char *)p.data;
    slen = p.len - 1;
    CHECK(slen + 2 <= CP_MILTER_REPLY_MAX);
    CHECK(memchr(s, '\r', slen) == NULL && memchr(s, '\n', slen) == NULL);
    for (size_t i = 0; i < slen; i++)
        CHECK((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f);
    CHECK(memcmp(s, code, 3) == 0 && s[3] == ' ');
    CHECK(memcmp(s + 4, dsn, strlen(dsn)) == 0);
    if (tlen == 0) {
        CHECK(slen == head);
    } else {
        CHECK(slen >= head + 1 && s[head] == ' ');
        wlen = expect_text(want, text, tlen);
        /* the text is the expected one, or a prefix of it when too long */
        CHECK(slen - head - 1 <= wlen);
        CHECK(memcmp(s + head + 1, want, slen - head - 1) == 0);
        if (head + 1 + wlen + 2 <= CP_MILTER_REPLY_MAX)
            CHECK(slen - head - 1 == wlen);
        /* a cut never leaves half of a "%%" */
        {
            size_t pct = 0;

            for (size_t i = head + 1; i < slen; i++)
                pct += s[i] == '%';
            CHECK(pct % 2 == 0);
        }
    }
    /* one byte less room than needed is refused */
    CHECK(cp_milter_put_reply(out, (size_t)n - 1, code, dsn, (const char *)text,
                              tlen) == -1);
    free(want);
}

static void
check_quarantine(const unsigned char *text, size_t tlen)
{
    unsigned char out[CP_MILTER_QUARANTINE_PKT_MAX];
    struct cp_milter_pkt p;
    int n =
        cp_milter_put_quarantine(out, sizeof(out), (const char *)text, tlen);

    CHECK(n > 0 && cp_milter_frame(out, (size_t)n, CP_MILTER_MAX, &p) == n);
    CHECK(p.cmd == 'q' && p.len >= 2 && p.data[p.len - 1] == '\0');
    CHECK(p.len - 1 <= CP_MILTER_REASON_MAX);
    for (size_t i = 0; i + 1 < p.len; i++) /* 7-bit printable */
        CHECK(p.data[i] >= 0x20 && p.data[i] < 0x7f);
    if (p.len - 1 == tlen)
        for (size_t i = 0; i < tlen; i++)
            CHECK(p.data[i] == text[i] || p.data[i] == ' ' ||
                  p.data[i] == '?');
}

static void
check_packet(const struct cp_milter_pkt *p)
{
    unsigned char out[8];
    bool plain = p->cmd != '\0' && strchr("acdprst", p->cmd) != NULL;

    CHECK(cp_milter_cmd_name(p->cmd) != NULL);
    CHECK(cp_milter_put(out, sizeof(out), p->cmd) == (plain ? 5 : -1));
    check_optneg(p);
    check_macros(p);
    check_connect(p);
    check_strings(p);
    check_reply(p->data, p->len < 700 ? p->len : 700, (unsigned char)p->cmd);
    check_quarantine(p->data, p->len < 400 ? p->len : 400);
}

/* Frame from an exact-size copy of win[0..n); check against an oracle. */
static int
frame_copy(const unsigned char *win, size_t n)
{
    unsigned char *b = malloc(n ? n : 1);
    struct cp_milter_pkt p;
    int r;

    CHECK(b != NULL);
    memcpy(b, win, n);
    r = cp_milter_frame(b, n, CP_MILTER_MAX, &p);
    if (n < 4) {
        CHECK(r == 0);
    } else {
        uint32_t len = get32(b);

        if (len == 0)
            CHECK(r == -1);
        else if (len - 1 > CP_MILTER_MAX)
            CHECK(r == CP_MILTER_TOO_LONG);
        else if (n - 4 < len)
            CHECK(r == 0);
        else
            CHECK(r == (int)(4 + len) && p.len == len - 1 && p.data == b + 5 &&
                  p.cmd == (char)b[4]);
    }
    if (r > 0) {
        /* decode from a copy of just this packet's data */
        unsigned char *d = malloc(p.len ? p.len : 1);
        struct cp_milter_pkt q = {p.cmd, d, p.len};

        CHECK(d != NULL);
        memcpy(d, p.data, p.len);
        check_packet(&q);
        free(d);
    }
    free(b);
    return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t step, off = 1, avail = 1;

    if (size < 1)
        return 0;
    step = (size_t)data[0] + 1;
    while (off < size) {
        int r;

        avail = size - avail < step ? size : avail + step;
        while ((r = frame_copy(data + off, avail - off)) > 0)
            off += (size_t)r;
        if (r < 0 || avail == size)
            break;
    }
    return 0;
}
