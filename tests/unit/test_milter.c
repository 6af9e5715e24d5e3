/*
 * test_milter.c — the milter codec: framing of a realistic Postfix session
 * split at every byte, invalid lengths, each decoder on good and malformed
 * packets, and the encoders byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/milter.h"

/* A string literal with embedded NULs, without the compiler's final NUL. */
#define LIT(s) (s), (sizeof(s) - 1)

struct wire {
    unsigned char b[4096];
    size_t n;
    size_t off[64], len[64]; /* where each packet's data is, and its size */
    char cmd[64];
    size_t npkt;
};

static void
put_pkt(struct wire *w, char cmd, const char *data, size_t len)
{
    uint32_t l = (uint32_t)len + 1;

    assert_true(w->n + 5 + len <= sizeof(w->b));
    assert_true(w->npkt < 64);
    w->b[w->n++] = (unsigned char)(l >> 24);
    w->b[w->n++] = (unsigned char)(l >> 16);
    w->b[w->n++] = (unsigned char)(l >> 8);
    w->b[w->n++] = (unsigned char)l;
    w->b[w->n++] = (unsigned char)cmd;
    w->cmd[w->npkt] = cmd;
    w->off[w->npkt] = w->n;
    w->len[w->npkt] = len;
    w->npkt++;
    if (len > 0)
        memcpy(w->b + w->n, data, len);
    w->n += len;
}

/* What Postfix 3.7 sends with its default macro lists for one message. */
static void
build_session(struct wire *w)
{
    static const char optneg[] = "\0\0\0\x06"
                                 "\0\0\x01\xff"
                                 "\0\x1f\xff\xff";

    memset(w, 0, sizeof(*w));
    put_pkt(w, 'O', optneg, 12);
    put_pkt(w, 'D',
            LIT("C"
                "j\0mx.example.net\0"
                "{daemon_name}\0mx.example.net\0"
                "{daemon_addr}\0"
                "192.0.2.1\0"
                "v\0Postfix 3.7.11\0"
                "_\0client.example.com [198.51.100.7]\0"));
    put_pkt(w, 'C',
            LIT("client.example.com\0"
                "4\xd4\x31"
                "198.51.100.7\0"));
    put_pkt(w, 'D', LIT("H"));
    put_pkt(w, 'H', LIT("client.example.com\0"));
    put_pkt(w, 'D',
            LIT("M"
                "{auth_type}\0PLAIN\0"
                "{auth_authen}\0alice@example.net\0"
                "{mail_addr}\0alice@example.net\0"
                "{mail_host}\0example.net\0"
                "{mail_mailer}\0smtp\0"));
    put_pkt(w, 'M', LIT("<alice@example.net>\0SIZE=2048\0BODY=8BITMIME\0"));
    put_pkt(w, 'D',
            LIT("R"
                "i\0"
                "4XyZ1abcd\0"
                "{rcpt_addr}\0bob@example.org\0"
                "{rcpt_host}\0mx.example.org\0"
                "{rcpt_mailer}\0smtp\0"));
    put_pkt(w, 'R', LIT("<bob@example.org>\0"));
    put_pkt(w, 'D',
            LIT("T"
                "i\0"
                "4XyZ1abcd\0"));
    put_pkt(w, 'T', "", 0);
    put_pkt(w, 'D',
            LIT("L"
                "i\0"
                "4XyZ1abcd\0"));
    put_pkt(w, 'L', LIT("From\0Alice <alice@example.net>\0"));
    put_pkt(w, 'D',
            LIT("L"
                "i\0"
                "4XyZ1abcd\0"));
    put_pkt(w, 'L', LIT("Subject\0Hello 100%\0"));
    put_pkt(w, 'D',
            LIT("N"
                "i\0"
                "4XyZ1abcd\0"));
    put_pkt(w, 'N', "", 0);
    put_pkt(w, 'D',
            LIT("B"
                "i\0"
                "4XyZ1abcd\0"));
    put_pkt(w, 'B', LIT("Hello Bob,\r\n\r\nSee you.\r\n"));
    put_pkt(w, 'D',
            LIT("E"
                "i\0"
                "4XyZ1abcd\0"));
    put_pkt(w, 'E', "", 0);
    put_pkt(w, 'A', "", 0);
    put_pkt(w, 'Q', "", 0);
}

/*
 * A receive buffer as the daemon keeps one: bytes are appended, whole
 * packets framed off the front, the rest moved down. Each framed packet is
 * checked against the one the session was built from.
 */
struct rx {
    const struct wire *w;
    unsigned char buf[4096];
    size_t have;
    size_t seen; /* packets framed so far */
};

static void
rx_feed(struct rx *r, const unsigned char *in, size_t n)
{
    size_t off = 0;
    struct cp_milter_pkt p;
    int used;

    assert_true(r->have + n <= sizeof(r->buf));
    memcpy(r->buf + r->have, in, n);
    r->have += n;
    while ((used = cp_milter_frame(r->buf + off, r->have - off, CP_MILTER_MAX, &p)) > 0) {
        size_t i = r->seen++;

        assert_true(i < r->w->npkt);
        assert_int_equal(p.cmd, r->w->cmd[i]);
        assert_int_equal(p.len, r->w->len[i]);
        assert_int_equal(used, 5 + r->w->len[i]);
        assert_memory_equal(p.data, r->w->b + r->w->off[i], p.len);
        off += (size_t)used;
    }
    assert_int_equal(used, 0);
    memmove(r->buf, r->buf + off, r->have - off);
    r->have -= off;
}

static void
test_frame_every_split(void **state)
{
    struct wire w;

    (void)state;
    build_session(&w);
    assert_int_equal(w.npkt, 23);
    for (size_t k = 0; k <= w.n; k++) {
        struct rx r = {.w = &w};

        rx_feed(&r, w.b, k);
        rx_feed(&r, w.b + k, w.n - k);
        assert_int_equal(r.seen, w.npkt);
        assert_int_equal(r.have, 0);
    }
}

static void
test_frame_every_chunk_size(void **state)
{
    struct wire w;

    (void)state;
    build_session(&w);
    for (size_t step = 1; step <= w.n; step++) {
        struct rx r = {.w = &w};

        for (size_t off = 0; off < w.n; off += step)
            rx_feed(&r, w.b + off, w.n - off < step ? w.n - off : step);
        assert_int_equal(r.seen, w.npkt);
        assert_int_equal(r.have, 0);
    }
}

static void
set_len(unsigned char *b, uint32_t l)
{
    b[0] = (unsigned char)(l >> 24);
    b[1] = (unsigned char)(l >> 16);
    b[2] = (unsigned char)(l >> 8);
    b[3] = (unsigned char)l;
}

static void
test_frame_lengths(void **state)
{
    unsigned char b[16] = {0};
    struct cp_milter_pkt p = {'?', NULL, 77};

    (void)state;
    assert_int_equal(cp_milter_frame(b, 0, CP_MILTER_MAX, &p), 0);
    assert_int_equal(cp_milter_frame(b, 3, CP_MILTER_MAX, &p), 0);
    /* length 0 is refused as soon as the length field is complete */
    assert_int_equal(cp_milter_frame(b, 4, CP_MILTER_MAX, &p), -1);
    assert_int_equal(cp_milter_frame(b, sizeof(b), CP_MILTER_MAX, &p), -1);
    /* the largest accepted length waits for its data... */
    set_len(b, CP_MILTER_MAX + 1);
    assert_int_equal(cp_milter_frame(b, sizeof(b), CP_MILTER_MAX, &p), 0);
    /* ...one more is refused before any data is there */
    set_len(b, CP_MILTER_MAX + 2);
    assert_int_equal(cp_milter_frame(b, 4, CP_MILTER_MAX, &p),
                     CP_MILTER_TOO_LONG);
    set_len(b, 0xffffffffu);
    assert_int_equal(cp_milter_frame(b, 4, CP_MILTER_MAX, &p),
                     CP_MILTER_TOO_LONG);
    set_len(b, 0x80000000u);
    assert_int_equal(cp_milter_frame(b, 4, CP_MILTER_MAX, &p),
                     CP_MILTER_TOO_LONG);
    /* the caller's own limit (the daemon's is smaller): the same rule */
    set_len(b, 1001);
    assert_int_equal(cp_milter_frame(b, 4, 1000, &p), 0);
    set_len(b, 1002);
    assert_int_equal(cp_milter_frame(b, 4, 1000, &p), CP_MILTER_TOO_LONG);
    set_len(b, 1002);
    assert_int_equal(cp_milter_frame(b, 4, 1001, &p), 0);
    /* nothing was filled in by any of that */
    assert_int_equal(p.cmd, '?');
    assert_null(p.data);
    assert_int_equal(p.len, 77);
    /* length 1: a command without data; the header alone is not enough */
    set_len(b, 1);
    b[4] = 'N';
    assert_int_equal(cp_milter_frame(b, 4, CP_MILTER_MAX, &p), 0);
    assert_int_equal(cp_milter_frame(b, 5, CP_MILTER_MAX, &p), 5);
    assert_int_equal(p.cmd, 'N');
    assert_int_equal(p.len, 0);
    assert_ptr_equal(p.data, b + 5);
    /* a packet one byte short of complete */
    set_len(b, 4);
    b[4] = 'H';
    memcpy(b + 5, "ab", 3);
    assert_int_equal(cp_milter_frame(b, 7, CP_MILTER_MAX, &p), 0);
    assert_int_equal(cp_milter_frame(b, 8, CP_MILTER_MAX, &p), 8);
    assert_int_equal(p.len, 3);
}

static void
test_frame_max_packet(void **state)
{
    size_t n = CP_MILTER_HDR + CP_MILTER_MAX;
    unsigned char *b = calloc(1, n + 5);
    struct cp_milter_pkt p;

    (void)state;
    assert_non_null(b);
    set_len(b, CP_MILTER_MAX + 1);
    b[4] = 'B';
    assert_int_equal(cp_milter_frame(b, n - 1, CP_MILTER_MAX, &p), 0);
    assert_int_equal(cp_milter_frame(b, n, CP_MILTER_MAX, &p), (int)n);
    assert_int_equal(p.len, CP_MILTER_MAX);
    /* pipelined: only the first packet is consumed */
    set_len(b + n, 1);
    b[n + 4] = 'E';
    assert_int_equal(cp_milter_frame(b, n + 5, CP_MILTER_MAX, &p), (int)n);
    assert_int_equal(cp_milter_frame(b + n, 5, CP_MILTER_MAX, &p), 5);
    assert_int_equal(p.cmd, 'E');
    free(b);
}

static void
test_frame_bad_length_mid_stream(void **state)
{
    struct wire w;
    struct cp_milter_pkt p;
    size_t off = 0, n;
    int used, count = 0;

    (void)state;
    build_session(&w);
    n = w.off[3] - 5; /* cut before the fourth packet and poison it */
    memset(w.b + n, 0, 4);
    while ((used = cp_milter_frame(w.b + off, w.n - off, CP_MILTER_MAX, &p)) > 0) {
        off += (size_t)used;
        count++;
    }
    assert_int_equal(used, -1);
    assert_int_equal(count, 3);
    assert_int_equal(off, n);
}

static struct cp_milter_pkt
mkpkt(char cmd, const char *data, size_t len)
{
    struct cp_milter_pkt p = {cmd, (const unsigned char *)data, (uint32_t)len};

    return p;
}

static bool
str_is(struct str s, const char *lit)
{
    return s.p != NULL && s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static void
test_optneg(void **state)
{
    uint32_t v = 1, a = 2, pr = 3;
    struct cp_milter_pkt p = mkpkt('O', LIT("\0\0\0\x06"
                                            "\0\0\x01\xff"
                                            "\0\x1f\xff\xff"
                                            "\xde\xad"));

    (void)state;
    assert_int_equal(cp_milter_optneg(&p, &v, &a, &pr), 0);
    assert_int_equal(v, 6);
    assert_int_equal(a, 0x1ff);
    assert_int_equal(pr, 0x1fffff);
    p.len = 12;
    assert_int_equal(cp_milter_optneg(&p, &v, &a, &pr), 0);
    v = a = pr = 9;
    p.len = 11;
    assert_int_equal(cp_milter_optneg(&p, &v, &a, &pr), -1);
    p.len = 0;
    assert_int_equal(cp_milter_optneg(&p, &v, &a, &pr), -1);
    assert_int_equal(v, 9);
    assert_int_equal(a, 9);
    assert_int_equal(pr, 9);
}

struct seen {
    int n;
    char names[8][32], values[8][64];
    bool terminated; /* name[nlen] and value[vlen] were NUL every time */
};

static void
collect(void *arg, const char *name, size_t nlen, const char *value,
        size_t vlen)
{
    struct seen *s = arg;

    assert_true(s->n < 8 && nlen < 32 && vlen < 64);
    memcpy(s->names[s->n], name, nlen);
    s->names[s->n][nlen] = '\0';
    memcpy(s->values[s->n], value, vlen);
    s->values[s->n][vlen] = '\0';
    if (name[nlen] != '\0' || value[vlen] != '\0')
        s->terminated = false;
    s->n++;
}

static int
macros(const char *data, size_t len, char *stage, struct seen *s)
{
    struct cp_milter_pkt p = mkpkt('D', data, len);

    memset(s, 0, sizeof(*s));
    s->terminated = true;
    return cp_milter_macros(&p, stage, collect, s);
}

static void
test_macros_good(void **state)
{
    struct seen s;
    char stage = '?';

    (void)state;
    assert_int_equal(macros(LIT("M"
                                "i\0"
                                "4XyZ1\0"
                                "{auth_authen}\0alice@example.net\0"
                                "{auth_author}\0\0"),
                            &stage, &s),
                     3);
    assert_int_equal(stage, 'M');
    assert_int_equal(s.n, 3);
    assert_true(s.terminated);
    assert_string_equal(s.names[0], "i");
    assert_string_equal(s.values[0], "4XyZ1");
    assert_string_equal(s.names[1], "{auth_authen}");
    assert_string_equal(s.values[1], "alice@example.net");
    assert_string_equal(s.names[2], "{auth_author}");
    assert_string_equal(s.values[2], "");
    /* a bare stage: Postfix sends it when no listed macro has a value */
    stage = '?';
    assert_int_equal(macros(LIT("H"), &stage, &s), 0);
    assert_int_equal(stage, 'H');
    assert_int_equal(s.n, 0);
    /* fn may be NULL: count only */
    {
        struct cp_milter_pkt p = mkpkt('D', LIT("Cj\0mx\0v\0Postfix\0"));

        assert_int_equal(cp_milter_macros(&p, &stage, NULL, NULL), 2);
        assert_int_equal(stage, 'C');
    }
}

static void
test_macros_malformed(void **state)
{
    struct seen s;
    char stage = '?';

    (void)state;
    /* empty packet: not even a stage */
    assert_int_equal(macros("", 0, &stage, &s), -1);
    /* the last value lacks its NUL */
    assert_int_equal(macros(LIT("Cj\0mx.example.net"), &stage, &s), -1);
    /* a name without a value: odd number of strings */
    assert_int_equal(macros(LIT("Mi\0"
                                "4XyZ1\0{auth_authen}\0"),
                            &stage, &s),
                     -1);
    /* a name without its NUL */
    assert_int_equal(macros(LIT("Mi"), &stage, &s), -1);
    /* nothing was reported for any malformed packet */
    assert_int_equal(s.n, 0);
    assert_int_equal(stage, '?');
    /* good pairs before a bad one are not reported either */
    assert_int_equal(macros(LIT("Mi\0"
                                "1\0j\0"),
                            &stage, &s),
                     -1);
    assert_int_equal(s.n, 0);
}

static void
test_macro_is(void **state)
{
    (void)state;
    assert_true(cp_milter_macro_is(LIT("{auth_authen}"), "auth_authen"));
    assert_true(cp_milter_macro_is(LIT("auth_authen"), "auth_authen"));
    assert_true(cp_milter_macro_is(LIT("{auth_authen}"), "{auth_authen}"));
    assert_true(cp_milter_macro_is(LIT("i"), "i"));
    assert_true(cp_milter_macro_is(LIT("{i}"), "i"));
    assert_true(cp_milter_macro_is(LIT("i"), "{i}"));
    assert_false(cp_milter_macro_is(LIT("{auth_authen"), "auth_authen"));
    assert_false(cp_milter_macro_is(LIT("auth_authen}"), "auth_authen"));
    assert_false(cp_milter_macro_is(LIT("{auth_authenx}"), "auth_authen"));
    assert_false(cp_milter_macro_is(LIT("{auth}"), "auth_authen"));
    assert_false(cp_milter_macro_is(LIT("{{i}}"), "i"));
    assert_false(cp_milter_macro_is(LIT("{}"), ""));
    assert_false(cp_milter_macro_is("", 0, "i"));
    assert_false(cp_milter_macro_is(NULL, 0, "i"));
    /* the length given is what counts, not a NUL */
    assert_true(cp_milter_macro_is("ij", 1, "i"));
    assert_false(cp_milter_macro_is("i", 1, "ij"));
}

static int
connect_pkt(const char *data, size_t len, struct str *host, char *fam,
            uint16_t *port, struct str *addr)
{
    struct cp_milter_pkt p = mkpkt('C', data, len);

    host->p = addr->p = NULL;
    host->len = addr->len = 99;
    *fam = '?';
    *port = 7;
    return cp_milter_connect(&p, host, fam, port, addr);
}

static void
test_connect_good(void **state)
{
    struct str host, addr;
    uint16_t port;
    char fam;

    (void)state;
    assert_int_equal(connect_pkt(LIT("client.example.com\0"
                                     "4\xd4\x31"
                                     "198.51.100.7\0"),
                                 &host, &fam, &port, &addr),
                     0);
    assert_true(str_is(host, "client.example.com"));
    assert_int_equal(fam, '4');
    assert_int_equal(port, 54321);
    assert_true(str_is(addr, "198.51.100.7"));
    assert_int_equal(connect_pkt(LIT("[2001:db8::7]\0"
                                     "6\x00\x19"
                                     "2001:db8::7\0"),
                                 &host, &fam, &port, &addr),
                     0);
    assert_true(str_is(host, "[2001:db8::7]"));
    assert_int_equal(fam, '6');
    assert_int_equal(port, 25);
    assert_true(str_is(addr, "2001:db8::7"));
    assert_int_equal(connect_pkt(LIT("localhost\0L\0\0/run/smtpd.sock\0"),
                                 &host, &fam, &port, &addr),
                     0);
    assert_int_equal(fam, 'L');
    assert_int_equal(port, 0);
    assert_true(str_is(addr, "/run/smtpd.sock"));
    /* unknown family: no port, no address */
    assert_int_equal(
        connect_pkt(LIT("localhost\0U"), &host, &fam, &port, &addr), 0);
    assert_int_equal(fam, 'U');
    assert_int_equal(port, 0);
    assert_non_null(addr.p);
    assert_int_equal(addr.len, 0);
    /* an empty host name is well formed */
    assert_int_equal(connect_pkt(LIT("\0"
                                     "4\0\x19"
                                     "192.0.2.9\0"),
                                 &host, &fam, &port, &addr),
                     0);
    assert_int_equal(host.len, 0);
}

static void
test_connect_malformed(void **state)
{
    struct str host, addr;
    uint16_t port;
    char fam;

    (void)state;
    /* empty; host without NUL; host and no family */
    assert_int_equal(connect_pkt("", 0, &host, &fam, &port, &addr), -1);
    assert_int_equal(
        connect_pkt(LIT("client.example.com"), &host, &fam, &port, &addr), -1);
    assert_int_equal(
        connect_pkt(LIT("client.example.com\0"), &host, &fam, &port, &addr),
        -1);
    /* truncated port */
    assert_int_equal(connect_pkt(LIT("h\0"
                                     "4\xd4"),
                                 &host, &fam, &port, &addr),
                     -1);
    /* port but no address at all */
    assert_int_equal(connect_pkt(LIT("h\0"
                                     "4\xd4\x31"),
                                 &host, &fam, &port, &addr),
                     -1);
    /* address without its NUL */
    assert_int_equal(connect_pkt(LIT("h\0"
                                     "4\xd4\x31"
                                     "198.51.100.7"),
                                 &host, &fam, &port, &addr),
                     -1);
    /* bytes after the address */
    assert_int_equal(connect_pkt(LIT("h\0"
                                     "4\xd4\x31"
                                     "198.51.100.7\0x"),
                                 &host, &fam, &port, &addr),
                     -1);
    /* unknown family byte */
    assert_int_equal(connect_pkt(LIT("h\0X\xd4\x31"
                                     "198.51.100.7\0"),
                                 &host, &fam, &port, &addr),
                     -1);
    /* 'U' with something after it */
    assert_int_equal(connect_pkt(LIT("h\0U\0\0"), &host, &fam, &port, &addr),
                     -1);
    /* no output was touched by a malformed packet */
    assert_null(host.p);
    assert_null(addr.p);
    assert_int_equal(host.len, 99);
    assert_int_equal(fam, '?');
    assert_int_equal(port, 7);
}

static void
test_first_arg(void **state)
{
    struct str s;
    struct cp_milter_pkt p;

    (void)state;
    p = mkpkt('H', LIT("client.example.com\0"));
    assert_int_equal(cp_milter_first_arg(&p, &s), 0);
    assert_true(str_is(s, "client.example.com"));
    p = mkpkt('M', LIT("<alice@example.net>\0SIZE=2048\0BODY=8BITMIME\0"));
    assert_int_equal(cp_milter_first_arg(&p, &s), 2);
    assert_true(str_is(s, "<alice@example.net>"));
    p = mkpkt('M', LIT("<>\0"));
    assert_int_equal(cp_milter_first_arg(&p, &s), 0);
    assert_true(str_is(s, "<>"));
    p = mkpkt('R', LIT("<bob@example.org>\0NOTIFY=NEVER\0"));
    assert_int_equal(cp_milter_first_arg(&p, &s), 1);
    assert_true(str_is(s, "<bob@example.org>"));

    s.p = NULL;
    s.len = 99;
    p = mkpkt('H', "", 0);
    assert_int_equal(cp_milter_first_arg(&p, &s), -1);
    p = mkpkt('H', LIT("client.example.com"));
    assert_int_equal(cp_milter_first_arg(&p, &s), -1);
    /* the last ESMTP argument lacks its NUL */
    p = mkpkt('M', LIT("<a@b>\0SIZE=1"));
    assert_int_equal(cp_milter_first_arg(&p, &s), -1);
    assert_null(s.p);
    assert_int_equal(s.len, 99);
}

/* A NUL just after the packet (the next packet's length field) must not be
 * taken as the string's terminator. */
static void
test_no_read_past_packet(void **state)
{
    static const unsigned char b[] = {0,   0, 0, 4, 'H', 'a', 'b',
                                      'c', 0, 0, 0, 1,   'Q'};
    struct cp_milter_pkt p;
    struct str s, v;
    uint16_t port;
    char c;

    (void)state;
    assert_int_equal(cp_milter_frame(b, sizeof(b), CP_MILTER_MAX, &p), 8);
    assert_int_equal(p.len, 3);
    assert_int_equal(cp_milter_first_arg(&p, &s), -1);
    assert_int_equal(cp_milter_header(&p, &s, &v), -1);
    assert_int_equal(cp_milter_macros(&p, &c, NULL, NULL), -1);
    assert_int_equal(cp_milter_connect(&p, &s, &c, &port, &v), -1);
}

static void
test_header(void **state)
{
    struct str name = {NULL, 99}, value = {NULL, 99};
    struct cp_milter_pkt p;

    (void)state;
    p = mkpkt('L', LIT("Subject\0Hello 100%\0"));
    assert_int_equal(cp_milter_header(&p, &name, &value), 0);
    assert_true(str_is(name, "Subject"));
    assert_true(str_is(value, "Hello 100%"));
    p = mkpkt('L', LIT("X-Empty\0\0"));
    assert_int_equal(cp_milter_header(&p, &name, &value), 0);
    assert_true(str_is(name, "X-Empty"));
    assert_int_equal(value.len, 0);
    p = mkpkt('L', LIT("Received\0from a\n\tby b\0"));
    assert_int_equal(cp_milter_header(&p, &name, &value), 0);
    assert_true(str_is(value, "from a\n\tby b"));

    name.p = value.p = NULL;
    p = mkpkt('L', LIT("\0value\0"));
    assert_int_equal(cp_milter_header(&p, &name, &value), -1);
    p = mkpkt('L', LIT("Subject\0Hello"));
    assert_int_equal(cp_milter_header(&p, &name, &value), -1);
    p = mkpkt('L', LIT("Subject\0"));
    assert_int_equal(cp_milter_header(&p, &name, &value), -1);
    p = mkpkt('L', LIT("Subject\0Hello\0extra\0"));
    assert_int_equal(cp_milter_header(&p, &name, &value), -1);
    p = mkpkt('L', "", 0);
    assert_int_equal(cp_milter_header(&p, &name, &value), -1);
    assert_null(name.p);
    assert_null(value.p);
}

static void
test_cmd_name(void **state)
{
    (void)state;
    assert_string_equal(cp_milter_cmd_name('O'), "SMFIC_OPTNEG");
    assert_string_equal(cp_milter_cmd_name('C'), "SMFIC_CONNECT");
    assert_string_equal(cp_milter_cmd_name('E'), "SMFIC_BODYEOB");
    assert_string_equal(cp_milter_cmd_name('K'), "SMFIC_QUIT_NC");
    assert_string_equal(cp_milter_cmd_name('U'), "SMFIC_UNKNOWN");
    assert_string_equal(cp_milter_cmd_name('z'), "(unknown command)");
    assert_string_equal(cp_milter_cmd_name('\0'), "(unknown command)");
    /* every command of the session has a real name */
    for (const char *c = "ABCDEHKLMNOQRTU"; *c; c++)
        assert_int_not_equal(cp_milter_cmd_name(*c)[0], '(');
}

static void
test_put_optneg(void **state)
{
    static const unsigned char want[] = {
        0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 0, 0, 0, 0x1f, 0x20, 0x30,
    };
    unsigned char out[32];
    struct cp_milter_pkt p;
    uint32_t v, a, pr;

    (void)state;
    memset(out, 0xaa, sizeof(out));
    assert_int_equal(cp_milter_put_optneg(out, sizeof(out), 6, 0, 0x1f2030),
                     17);
    assert_memory_equal(out, want, sizeof(want));
    assert_int_equal(out[17], 0xaa);
    /* it frames and decodes back to the same values */
    assert_int_equal(cp_milter_frame(out, 17, CP_MILTER_MAX, &p), 17);
    assert_int_equal(p.cmd, 'O');
    assert_int_equal(cp_milter_optneg(&p, &v, &a, &pr), 0);
    assert_int_equal(v, 6);
    assert_int_equal(a, 0);
    assert_int_equal(pr, 0x1f2030);
    memset(out, 0xaa, sizeof(out));
    assert_int_equal(cp_milter_put_optneg(out, 16, 6, 0, 0), -1);
    assert_int_equal(out[0], 0xaa);
}

static void
test_put(void **state)
{
    unsigned char out[8];

    (void)state;
    memset(out, 0xaa, sizeof(out));
    assert_int_equal(cp_milter_put(out, sizeof(out), 'c'), 5);
    assert_memory_equal(out,
                        "\0\0\0\x01"
                        "c",
                        5);
    assert_int_equal(out[5], 0xaa);
    for (const char *r = "acdprst"; *r; r++) {
        assert_int_equal(cp_milter_put(out, 5, *r), 5);
        assert_int_equal(out[4], *r);
    }
    memset(out, 0xaa, sizeof(out));
    assert_int_equal(cp_milter_put(out, sizeof(out), 'y'), -1);
    assert_int_equal(cp_milter_put(out, sizeof(out), 'x'), -1);
    assert_int_equal(cp_milter_put(out, sizeof(out), '\0'), -1);
    assert_int_equal(cp_milter_put(out, 4, 'c'), -1);
    assert_int_equal(out[0], 0xaa);
}

/* Frame a 'y' packet and return its string (checked NUL-terminated). */
static const char *
reply_str(const unsigned char *out, int n)
{
    struct cp_milter_pkt p;

    assert_true(n > 0);
    assert_int_equal(cp_milter_frame(out, (size_t)n, CP_MILTER_MAX, &p), n);
    assert_int_equal(p.cmd, 'y');
    assert_true(p.len >= 1);
    assert_int_equal(p.data[p.len - 1], '\0');
    assert_null(memchr(p.data, '\0', p.len - 1));
    return (const char *)p.data;
}

static void
test_put_reply_basic(void **state)
{
    unsigned char out[CP_MILTER_REPLY_PKT_MAX];
    const char text[] = "rate limit exceeded";
    const char want[] = "\0\0\0\x1f"
                        "y550 5.7.1 rate limit exceeded";
    int n;

    (void)state;
    n = cp_milter_put_reply(out, sizeof(out), "550", "5.7.1", text,
                            strlen(text));
    assert_int_equal(n, (int)sizeof(want));
    assert_memory_equal(out, want, sizeof(want)); /* incl. the final NUL */
    n = cp_milter_put_reply(out, sizeof(out), "451", "4.7.1", NULL, 0);
    assert_string_equal(reply_str(out, n), "451 4.7.1");
    n = cp_milter_put_reply(out, sizeof(out), "421", "4.3.2", "", 0);
    assert_string_equal(reply_str(out, n), "421 4.3.2");
    n = cp_milter_put_reply(out, sizeof(out), "554", "5.123.456", LIT("x"));
    assert_string_equal(reply_str(out, n), "554 5.123.456 x");
}

static void
test_put_reply_sanitise(void **state)
{
    unsigned char out[CP_MILTER_REPLY_PKT_MAX];
    int n;

    (void)state;
    /* CR, LF and an embedded NUL cannot end the line or the string */
    n = cp_milter_put_reply(out, sizeof(out), "550", "5.7.1",
                            LIT("bad\r\n250 ok\0tail"));
    assert_string_equal(reply_str(out, n), "550 5.7.1 bad  250 ok tail");
    /* '%' is doubled for Sendmail */
    n = cp_milter_put_reply(out, sizeof(out), "451", "4.7.1",
                            LIT("100% over %s quota"));
    assert_string_equal(reply_str(out, n), "451 4.7.1 100%% over %%s quota");
    /* replies are 7-bit printable: controls (TAB too) become spaces,
     * 8-bit bytes '?' */
    n = cp_milter_put_reply(out, sizeof(out), "550", "5.7.1",
                            LIT("a\tb\x1b[0m\x7f\xc3\xa9"));
    assert_string_equal(reply_str(out, n), "550 5.7.1 a b [0m ??");
}

static void
test_put_reply_refused(void **state)
{
    unsigned char out[CP_MILTER_REPLY_PKT_MAX];
    const char *bad_codes[] = {"250", "354", "55", "5500",
                               "5a0", "650", "",   " 50"};
    const char *bad_dsns[] = {"4.7.1", "2.0.0", "5.7",      "5.7.1.",
                              "5..1",  "5.7.",  "5.1000.1", "5.1.1000",
                              "57.1",  "",      "5.7.1 ",   "x.7.1"};

    (void)state;
    memset(out, 0xaa, sizeof(out));
    for (size_t i = 0; i < sizeof(bad_codes) / sizeof(bad_codes[0]); i++)
        assert_int_equal(cp_milter_put_reply(out, sizeof(out), bad_codes[i],
                                             "5.7.1", LIT("x")),
                         -1);
    assert_int_equal(
        cp_milter_put_reply(out, sizeof(out), "250", "2.0.0", LIT("ok")), -1);
    assert_int_equal(
        cp_milter_put_reply(out, sizeof(out), NULL, "5.7.1", LIT("x")), -1);
    for (size_t i = 0; i < sizeof(bad_dsns) / sizeof(bad_dsns[0]); i++)
        assert_int_equal(
            cp_milter_put_reply(out, sizeof(out), "550", bad_dsns[i], LIT("x")),
            -1);
    assert_int_equal(
        cp_milter_put_reply(out, sizeof(out), "550", NULL, LIT("x")), -1);
    assert_int_equal(
        cp_milter_put_reply(out, sizeof(out), "550", "5.7.1", NULL, 3), -1);
    assert_int_equal(out[0], 0xaa);
}

static void
test_put_reply_truncate(void **state)
{
    unsigned char out[CP_MILTER_REPLY_PKT_MAX + 8];
    char text[1200];
    const char *s;
    int n;

    (void)state;
    memset(text, 'a', sizeof(text));
    n = cp_milter_put_reply(out, sizeof(out), "550", "5.7.1", text,
                            sizeof(text));
    assert_int_equal(n, CP_MILTER_REPLY_PKT_MAX);
    s = reply_str(out, n);
    assert_int_equal(strlen(s) + 2, CP_MILTER_REPLY_MAX); /* + CRLF */
    assert_memory_equal(s, "550 5.7.1 aaa", 13);
    /* "550 5.7.1 " is 10 bytes; 498 a's leave room for "%%" exactly */
    text[498] = '%';
    n = cp_milter_put_reply(out, sizeof(out), "550", "5.7.1", text, 499);
    s = reply_str(out, n);
    assert_int_equal(strlen(s), 510);
    assert_memory_equal(s + 508, "%%", 2);
    /* one more a and the '%' no longer fits: it is dropped, not halved */
    memset(text, 'a', sizeof(text));
    text[499] = '%';
    n = cp_milter_put_reply(out, sizeof(out), "550", "5.7.1", text, 600);
    s = reply_str(out, n);
    assert_int_equal(strlen(s), 509);
    assert_int_equal(s[508], 'a');
    /* 8-bit bytes are '?' each, cut like any other byte */
    memset(text, 'a', sizeof(text));
    memcpy(text + 498, "\xc3\xa9", 2);
    n = cp_milter_put_reply(out, sizeof(out), "550", "5.7.1", text, 600);
    s = reply_str(out, n);
    assert_int_equal(strlen(s), 510);
    assert_memory_equal(s + 508, "??", 2);
}

static void
test_put_reply_cap(void **state)
{
    unsigned char out[64];
    int want = 5 + (int)strlen("550 5.7.1 no") + 1;

    (void)state;
    memset(out, 0xaa, sizeof(out));
    assert_int_equal(
        cp_milter_put_reply(out, (size_t)want - 1, "550", "5.7.1", LIT("no")),
        -1);
    assert_int_equal(out[0], 0xaa);
    assert_int_equal(cp_milter_put_reply(out, 0, "550", "5.7.1", LIT("no")),
                     -1);
    assert_int_equal(
        cp_milter_put_reply(out, (size_t)want, "550", "5.7.1", LIT("no")),
        want);
    assert_int_equal(out[want], 0xaa);
    assert_string_equal(reply_str(out, want), "550 5.7.1 no");
}

static void
test_put_quarantine(void **state)
{
    unsigned char out[CP_MILTER_QUARANTINE_PKT_MAX + 8];
    char text[400];
    struct cp_milter_pkt p;
    int n;

    (void)state;
    n = cp_milter_put_quarantine(out, sizeof(out), LIT("spam burst"));
    assert_int_equal(n, 5 + 11);
    assert_memory_equal(out, "\0\0\0\x0cqspam burst", 16); /* with NUL */
    /* controls become spaces; '%' is not doubled here */
    n = cp_milter_put_quarantine(out, sizeof(out), LIT("a\r\nb\0c 5%"));
    assert_int_equal(cp_milter_frame(out, (size_t)n, CP_MILTER_MAX, &p), n);
    assert_int_equal(p.cmd, 'q');
    assert_string_equal((const char *)p.data, "a  b c 5%");
    /* empty reason: a fixed one */
    n = cp_milter_put_quarantine(out, sizeof(out), NULL, 0);
    assert_int_equal(cp_milter_frame(out, (size_t)n, CP_MILTER_MAX, &p), n);
    assert_string_equal((const char *)p.data, "quarantined");
    /* long reason: cut at CP_MILTER_REASON_MAX */
    memset(text, 'x', sizeof(text));
    n = cp_milter_put_quarantine(out, sizeof(out), text, sizeof(text));
    assert_int_equal(n, CP_MILTER_QUARANTINE_PKT_MAX);
    assert_int_equal(cp_milter_frame(out, (size_t)n, CP_MILTER_MAX, &p), n);
    assert_int_equal(strlen((const char *)p.data), CP_MILTER_REASON_MAX);
    /* refused: too small a buffer, or a NULL reason with a length */
    memset(out, 0xaa, sizeof(out));
    assert_int_equal(cp_milter_put_quarantine(out, 15, LIT("spam burst")), -1);
    assert_int_equal(cp_milter_put_quarantine(out, sizeof(out), NULL, 4), -1);
    assert_int_equal(out[0], 0xaa);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_every_split),
        cmocka_unit_test(test_frame_every_chunk_size),
        cmocka_unit_test(test_frame_lengths),
        cmocka_unit_test(test_frame_max_packet),
        cmocka_unit_test(test_frame_bad_length_mid_stream),
        cmocka_unit_test(test_optneg),
        cmocka_unit_test(test_macros_good),
        cmocka_unit_test(test_macros_malformed),
        cmocka_unit_test(test_macro_is),
        cmocka_unit_test(test_connect_good),
        cmocka_unit_test(test_connect_malformed),
        cmocka_unit_test(test_first_arg),
        cmocka_unit_test(test_no_read_past_packet),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_cmd_name),
        cmocka_unit_test(test_put_optneg),
        cmocka_unit_test(test_put),
        cmocka_unit_test(test_put_reply_basic),
        cmocka_unit_test(test_put_reply_sanitise),
        cmocka_unit_test(test_put_reply_refused),
        cmocka_unit_test(test_put_reply_truncate),
        cmocka_unit_test(test_put_reply_cap),
        cmocka_unit_test(test_put_quarantine),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
