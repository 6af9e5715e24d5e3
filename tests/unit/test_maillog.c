/* test_maillog.c — the mail.log parser on a table of real-looking lines of
 * every variant, timestamps and the year, and the framer on every split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/maillog.h"

#define T_2026_11_23_161517 1795450517000LL
#define T_2026_11_23_101500 1795428900000LL
#define T_2026_12_31_235959 1798761599000LL
#define T_2027_01_01_000001 1798761601000LL
#define T_2024_02_29_120000 1709208000000LL

/* Parse `line` from a heap copy of exactly its bytes (no NUL after it), so
 * ASan catches any read past the end. */
static enum maillog_kind
parse_exact(struct maillog_ctx *c, const char *line, struct maillog_event *ev,
            char **copy)
{
    size_t n = strlen(line);

    *copy = malloc(n ? n : 1);
    memcpy(*copy, line, n);
    return maillog_parse(c, *copy, n, ev);
}

static void
assert_str(struct str s, const char *want)
{
    if (want == NULL) {
        assert_null(s.p);
        return;
    }
    assert_non_null(s.p);
    if (s.len != strlen(want) || memcmp(s.p, want, s.len) != 0)
        fail_msg("got \"%.*s\", want \"%s\"", (int)s.len, s.p, want);
}

/* ---- the table ---- */

struct row {
    const char *line;
    enum maillog_kind kind;
    const char *instance, *program, *queue_id;
    const char *a, *b, *c; /* kind-specific, see check_row */
    uint64_t n1, n2;
};

static const struct row rows[] = {
    /* smtpd client=, with and without SASL, other services, instances */
    {"Nov 23 16:15:18 smarthost postfix/smtpd[17564]: 2F325A72404: "
     "client=localhost[127.0.0.1], sasl_method=PLAIN, "
     "sasl_username=heidi@test.example",
     MAILLOG_SMTPD_CLIENT, "postfix", "smtpd", "2F325A72404", "127.0.0.1",
     "heidi@test.example", "PLAIN", 0, 0},
    {"Nov  3 09:01:02 mx1 postfix/submission/smtpd[2001]: 4Pz7xq2lGgz9tGB: "
     "client=pc1.dsl.isp.example[2001:db8::7]:50123, sasl_method=LOGIN, "
     "sasl_username=alice@isp.example, sasl_sender=alice@isp.example",
     MAILLOG_SMTPD_CLIENT, "postfix", "smtpd", "4Pz7xq2lGgz9tGB", "2001:db8::7",
     "alice@isp.example", "LOGIN", 0, 0},
    {"2026-11-23T16:03:30.123456+00:00 mx1 postfix/smtps/smtpd[2101]: "
     "ABCDEF0123: client=unknown[192.0.2.7]",
     MAILLOG_SMTPD_CLIENT, "postfix", "smtpd", "ABCDEF0123", "192.0.2.7", NULL,
     NULL, 0, 0},
    {"Nov 23 16:00:00 mx1 postfix-out/smtpd[7]: BEEF012345: "
     "client=localhost[127.0.0.1], orig_queue_id=ABCDEF0123, "
     "orig_client=pc1[192.0.2.7]",
     MAILLOG_SMTPD_CLIENT, "postfix-out", "smtpd", "BEEF012345", "127.0.0.1",
     NULL, NULL, 0, 0},
    {"<22>Nov 23 16:00:00 mx1 postfix/smtpd[7]: BEEF012345: "
     "client=x[198.51.100.1]",
     MAILLOG_SMTPD_CLIENT, "postfix", "smtpd", "BEEF012345", "198.51.100.1",
     NULL, NULL, 0, 0},
    /* qmgr */
    {"Nov 23 16:15:18 smarthost postfix/qmgr[17562]: 2F325A72404: "
     "from=<heidi@test.example>, size=497, nrcpt=1 (queue active)",
     MAILLOG_QMGR_FROM, "postfix", "qmgr", "2F325A72404", "heidi@test.example",
     NULL, NULL, 497, 1},
    {"Nov 23 16:15:18 mx1 postfix-out/qmgr[900]: E0E0000001: from=<>, "
     "size=4402, nrcpt=12 (queue active)",
     MAILLOG_QMGR_FROM, "postfix-out", "qmgr", "E0E0000001", "", NULL, NULL,
     4402, 12},
    {"Nov 23 16:15:18 mx1 postfix/qmgr[900]: E0E0000001: removed",
     MAILLOG_QMGR_REMOVED, "postfix", "qmgr", "E0E0000001", NULL, NULL, NULL, 0,
     0},
    {"Nov 23 16:15:18 mx1 postfix/qmgr[900]: E0E0000001: "
     "from=<a@example.com>, status=expired, returned to sender",
     MAILLOG_OTHER, "postfix", "qmgr", "E0E0000001", NULL, NULL, NULL, 0, 0},
    /* cleanup, pickup, bounce */
    {"Nov 23 16:15:18 mx1 postfix/cleanup[17579]: 2F325A72404: "
     "message-id=<20261123161518.017577@vm>",
     MAILLOG_CLEANUP_MSGID, "postfix", "cleanup", "2F325A72404",
     "<20261123161518.017577@vm>", NULL, NULL, 0, 0},
    {"Nov 23 10:50:00 mx1 postfix/pickup[950]: D0D0000001: uid=0 from=<root>",
     MAILLOG_PICKUP, "postfix", "pickup", "D0D0000001", "root", NULL, NULL, 0,
     0},
    {"Nov 23 10:55:01 mx1 postfix/bounce[5001]: B0B0000003: sender "
     "non-delivery notification: E0E0000001",
     MAILLOG_NOTIFICATION, "postfix", "bounce", "B0B0000003", "E0E0000001",
     NULL, NULL, 0, 0},
    /* deliveries by any agent; commas in the reply text stay in it */
    {"Nov 23 16:15:18 smarthost postfix/smtp[17580]: 2F325A72404: "
     "to=<someone@example.com>, relay=127.0.0.1[127.0.0.1]:37893, "
     "delay=0.04, delays=0.01/0.02/0.01/0, dsn=2.0.0, status=sent (250 2.0.0 "
     "Ok)",
     MAILLOG_DELIVERY, "postfix", "smtp", "2F325A72404", "someone@example.com",
     "sent", "2.0.0", 0, 0},
    {"Nov 23 10:55:01 mx1 postfix/smtp[4001]: B0B0000003: "
     "to=<nobody@example.org>, orig_to=<nobody@alias.example>, "
     "relay=mx.example.org[203.0.113.40]:25, delay=0.4, dsn=5.1.1, "
     "status=bounced (said: 550 5.1.1 unknown, dsn=9.9.9, status=sent)",
     MAILLOG_DELIVERY, "postfix", "smtp", "B0B0000003", "nobody@example.org",
     "bounced", "5.1.1", 0, 0},
    {"Nov 23 10:55:01 mx1 postfix-out/lmtp[4001]: B0B0000003: "
     "to=<u@example.org>, relay=none, delay=30, dsn=4.4.1, status=deferred "
     "(connect to x[private/dovecot-lmtp]: No such file or directory)",
     MAILLOG_DELIVERY, "postfix-out", "lmtp", "B0B0000003", "u@example.org",
     "deferred", "4.4.1", 0, 0},
    /* rejects */
    {"Nov 23 10:21:00 mx1 postfix/smtpd[2002]: NOQUEUE: reject: RCPT from "
     "unknown[203.0.113.99]: 554 5.7.1 <spam@example.com>: Relay access "
     "denied; from=<x@spam.example> to=<spam@example.com> proto=ESMTP",
     MAILLOG_REJECT, "postfix", "smtpd", NULL, "RCPT", NULL, NULL, 0, 0},
    {"Nov 23 10:21:00 mx1 postfix/cleanup[3001]: ABCDE12345: milter-reject: "
     "END-OF-MESSAGE from x[192.0.2.1]: 5.7.1 spam",
     MAILLOG_REJECT, "postfix", "cleanup", "ABCDE12345", "END-OF-MESSAGE", NULL,
     NULL, 0, 0},
    /* lines replay does not use */
    /* a connection: its client, and the TLS stack it negotiated (the
     * process id ties the submission's client= line to them) */
    {"Nov 23 16:15:18 smarthost postfix/smtpd[17564]: connect from "
     "localhost[127.0.0.1]",
     MAILLOG_SMTPD_CONNECT, "postfix", "smtpd", NULL, "127.0.0.1", "17564",
     NULL, 0, 0},
    {"2026-11-02T07:01:06.416000+00:00 mx1 postfix/submission/smtpd[2001]: "
     "Anonymous TLS connection established from unknown[2001:db8::7]: "
     "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) "
     "key-exchange X25519",
     MAILLOG_SMTPD_TLS, "postfix", "smtpd", NULL, "TLSv1.3",
     "TLS_AES_256_GCM_SHA384", "2001:db8::7", 0, 0},
    {"Nov 23 16:15:18 mx1 postfix/smtpd[5]: Trusted TLS connection "
     "established from pc[192.0.2.9]: TLSv1.2 with cipher "
     "ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)",
     MAILLOG_SMTPD_TLS, "postfix", "smtpd", NULL, "TLSv1.2",
     "ECDHE-RSA-AES128-GCM-SHA256", "192.0.2.9", 0, 0},
    {"Nov 23 16:15:18 mx1 postfix/smtpd[5]: Anonymous TLS connection "
     "established from pc[192.0.2.9] TLSv1.2",
     MAILLOG_OTHER, "postfix", "smtpd", NULL, NULL, NULL, NULL, 0, 0},
    {"Nov 23 16:15:18 mx1 postfix/smtpd[1]: warning: hostname x does not "
     "resolve",
     MAILLOG_OTHER, "postfix", "smtpd", NULL, NULL, NULL, NULL, 0, 0},
    {"Nov 23 16:15:18 mx1 dovecot: imap-login: Login: user=<alice>",
     MAILLOG_OTHER, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0},
    {"Nov 23 16:15:18 mx1 postfix/postfix-script[17558]: starting the Postfix "
     "mail system",
     MAILLOG_OTHER, "postfix", "postfix-script", NULL, NULL, NULL, NULL, 0, 0},
    /* broken */
    {"", MAILLOG_UNKNOWN, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0},
    {"this is not a syslog line", MAILLOG_UNKNOWN, NULL, NULL, NULL, NULL, NULL,
     NULL, 0, 0},
    {"Nov 23 10:0", MAILLOG_UNKNOWN, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0},
    {"Nov 32 10:00:00 mx1 postfix/smtpd[1]: x", MAILLOG_UNKNOWN, NULL, NULL,
     NULL, NULL, NULL, NULL, 0, 0},
    {"2026-11-23T25:00:00Z mx1 postfix/smtpd[1]: x", MAILLOG_UNKNOWN, NULL,
     NULL, NULL, NULL, NULL, NULL, 0, 0},
    {"Nov 23 10:00:00 mx1 last message repeated 3 times", MAILLOG_UNKNOWN, NULL,
     NULL, NULL, NULL, NULL, NULL, 0, 0},
    {"Nov 23 10:00:00 mx1 postfix/smtpd[2001]: ABCDE12345: client=nobrackets",
     MAILLOG_UNKNOWN, "postfix", "smtpd", "ABCDE12345", NULL, NULL, NULL, 0, 0},
    {"Nov 23 10:00:00 mx1 postfix/smtpd[2001]: ABCDE12345: client=x[]",
     MAILLOG_UNKNOWN, "postfix", "smtpd", "ABCDE12345", NULL, NULL, NULL, 0, 0},
    {"Nov 23 10:00:00 mx1 postfix/qmgr[1]: ABCDE12345: from=<x>, size=lots, "
     "nrcpt=1",
     MAILLOG_UNKNOWN, "postfix", "qmgr", "ABCDE12345", NULL, NULL, NULL, 0, 0},
    {"Nov 23 10:00:00 mx1 postfix/qmgr[1]: ABCDE12345: from=<x>, "
     "size=99999999999999999999999, nrcpt=1",
     MAILLOG_UNKNOWN, "postfix", "qmgr", "ABCDE12345", NULL, NULL, NULL, 0, 0},
    {"Nov 23 10:00:00 mx1 postfix/smtp[1]: ABCDE12345: to=<a@b, relay=none, "
     "status=sent",
     MAILLOG_UNKNOWN, "postfix", "smtp", "ABCDE12345", NULL, NULL, NULL, 0, 0},
    {"Nov 23 10:00:00 mx1 postfix/smtp[1]: ABCDE12345: to=<a@b>, relay=none",
     MAILLOG_UNKNOWN, "postfix", "smtp", "ABCDE12345", NULL, NULL, NULL, 0, 0},
};

static void
check_row(const struct row *r, const struct maillog_event *ev)
{
    switch (r->kind) {
    case MAILLOG_SMTPD_CLIENT:
        assert_str(ev->client_addr, r->a);
        assert_str(ev->sasl_username, r->b);
        assert_str(ev->sasl_method, r->c);
        break;
    case MAILLOG_QMGR_FROM:
        assert_str(ev->from, r->a);
        assert_int_equal(ev->size, r->n1);
        assert_int_equal(ev->nrcpt, r->n2);
        break;
    case MAILLOG_CLEANUP_MSGID:
        assert_str(ev->message_id, r->a);
        break;
    case MAILLOG_PICKUP:
        assert_str(ev->from, r->a);
        break;
    case MAILLOG_NOTIFICATION:
        assert_str(ev->new_queue_id, r->a);
        break;
    case MAILLOG_DELIVERY:
        assert_str(ev->to, r->a);
        assert_str(ev->status, r->b);
        assert_str(ev->dsn, r->c);
        break;
    case MAILLOG_REJECT:
        assert_str(ev->reject_stage, r->a);
        break;
    case MAILLOG_SMTPD_CONNECT:
        assert_str(ev->client_addr, r->a);
        assert_str(ev->pid, r->b);
        break;
    case MAILLOG_SMTPD_TLS:
        assert_str(ev->tls_protocol, r->a);
        assert_str(ev->tls_cipher, r->b);
        assert_str(ev->client_addr, r->c);
        break;
    default:
        break;
    }
}

static void
test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct row *r = &rows[i];
        struct maillog_ctx c;
        struct maillog_event ev;
        char *copy;

        maillog_ctx_init(&c, 2026, 0);
        if (parse_exact(&c, r->line, &ev, &copy) != r->kind)
            fail_msg("row %zu: kind %s, want %s: %s", i,
                     maillog_kind_name(ev.kind), maillog_kind_name(r->kind),
                     r->line);
        if (r->kind != MAILLOG_UNKNOWN || r->instance != NULL) {
            assert_str(ev.instance, r->instance);
            assert_str(ev.program, r->program);
        }
        if (r->kind != MAILLOG_UNKNOWN)
            assert_str(ev.queue_id, r->queue_id);
        check_row(r, &ev);
        free(copy);
    }
}

static void
test_service_and_host(void **state)
{
    struct maillog_ctx c;
    struct maillog_event ev;
    char *copy;

    (void)state;
    maillog_ctx_init(&c, 2026, 0);
    parse_exact(&c,
                "Nov 23 16:00:00 mx1.isp.example postfix-out/submission/"
                "smtpd[2001]: connect from x[192.0.2.1]",
                &ev, &copy);
    assert_str(ev.host, "mx1.isp.example");
    assert_str(ev.service, "postfix-out/submission/smtpd");
    assert_str(ev.instance, "postfix-out");
    assert_str(ev.program, "smtpd");
    free(copy);
    /* no pid */
    parse_exact(&c, "Nov 23 16:00:00 mx1 postfix/qmgr: ABCDE12345: removed",
                &ev, &copy);
    assert_int_equal(ev.kind, MAILLOG_QMGR_REMOVED);
    free(copy);
    /* a trailing CR is not part of the last value */
    parse_exact(&c,
                "Nov 23 16:00:00 mx1 postfix/smtpd[1]: ABCDE12345: "
                "client=x[192.0.2.1], sasl_username=bob\r",
                &ev, &copy);
    assert_str(ev.sasl_username, "bob");
    free(copy);
}

/* ---- time ---- */

static int64_t
ts(struct maillog_ctx *c, const char *stamp)
{
    char line[256];
    struct maillog_event ev;

    snprintf(line, sizeof(line), "%s mx1 postfix/qmgr[1]: ABCDE12345: removed",
             stamp);
    if (maillog_parse(c, line, strlen(line), &ev) != MAILLOG_QMGR_REMOVED)
        fail_msg("not parsed: %s", line);
    return ev.ts_ms;
}

static void
test_timestamps(void **state)
{
    struct maillog_ctx c;

    (void)state;
    maillog_ctx_init(&c, 2026, 0);
    assert_true(ts(&c, "Nov 23 16:15:17") == T_2026_11_23_161517);
    assert_true(ts(&c, "Nov 23 16:15:17.250871") == T_2026_11_23_161517 + 250);
    assert_true(ts(&c, "Nov 23 16:15:17.5") == T_2026_11_23_161517 + 500);
    assert_true(ts(&c, "2026-11-23T16:15:17Z") == T_2026_11_23_161517);
    assert_true(ts(&c, "2026-11-23T16:15:17.123456+00:00") ==
                T_2026_11_23_161517 + 123);
    assert_true(ts(&c, "2026-11-23T17:15:17.001+01:00") ==
                T_2026_11_23_161517 + 1);
    assert_true(ts(&c, "2026-11-23T11:15:17-0500") == T_2026_11_23_161517);
    assert_true(ts(&c, "2026-11-23t16:15:17z") == T_2026_11_23_161517);
    assert_true(ts(&c, "2024-02-29T12:00:00Z") == T_2024_02_29_120000);
    maillog_ctx_init(&c, 2024, 0);
    assert_true(ts(&c, "Feb 29 12:00:00") == T_2024_02_29_120000);
}

static void
test_year_rollover(void **state)
{
    struct maillog_ctx c;

    (void)state;
    maillog_ctx_init(&c, 2026, 0);
    assert_true(ts(&c, "Dec 31 23:59:59") == T_2026_12_31_235959);
    assert_true(ts(&c, "Jan  1 00:00:01") == T_2027_01_01_000001);
    /* a late line of the old year does not move the year back... */
    assert_true(ts(&c, "Dec 31 23:59:59") == T_2026_12_31_235959);
    /* ...nor forward again */
    assert_true(ts(&c, "Jan  1 00:00:01") == T_2027_01_01_000001);
}

static void
test_year_guess(void **state)
{
    struct maillog_ctx c;

    (void)state;
    /* Read on 2027-01-01: a log starting on Dec 31 is last year's. */
    maillog_ctx_init(&c, 0, T_2027_01_01_000001);
    assert_true(ts(&c, "Dec 31 23:59:59") == T_2026_12_31_235959);
    assert_true(ts(&c, "Jan  1 00:00:01") == T_2027_01_01_000001);
    /* Read later the same year: this year. */
    maillog_ctx_init(&c, 0, T_2026_12_31_235959);
    assert_true(ts(&c, "Nov 23 16:15:17") == T_2026_11_23_161517);
    /* A broken line does not set the year. */
    maillog_ctx_init(&c, 0, T_2026_11_23_101500);
    assert_int_equal(c.year, 0);
    {
        struct maillog_event ev;

        maillog_parse(&c, "Nov 23 16:15:17 x", 17, &ev);
        assert_int_equal(ev.kind, MAILLOG_UNKNOWN);
        assert_int_equal(c.year, 0);
    }
}

/* ---- framing ---- */

static const char stream[] = "line one\n"
                             "line two\r\n"
                             "\n"
                             "line four";

/* Feed `in` in chunks of `step`; return the lines joined by '|'. */
static void
frame_all(const char *in, size_t len, size_t step, char *out, size_t outsz,
          int *too_long)
{
    struct maillog_framer *f = malloc(sizeof(*f));
    const char *line;
    size_t off = 0, used, n, o = 0;

    maillog_framer_init(f);
    *too_long = 0;
    out[0] = '\0';
    while (off < len) {
        size_t chunk = len - off < step ? len - off : step, k = 0;

        while (k < chunk) {
            enum maillog_frame st = maillog_framer_feed(
                f, in + off + k, chunk - k, &used, &line, &n);

            k += used;
            if (st == MAILLOG_LINE && o < outsz)
                o +=
                    (size_t)snprintf(out + o, outsz - o, "%.*s|", (int)n, line);
            else if (st == MAILLOG_TOO_LONG)
                (*too_long)++;
        }
        off += chunk;
    }
    if (maillog_framer_finish(f, &line, &n) == MAILLOG_LINE && o < outsz)
        snprintf(out + o, outsz - o, "%.*s|", (int)n, line);
    free(f);
}

static void
test_framer_any_split(void **state)
{
    char out[256];
    int tl;

    (void)state;
    for (size_t step = 1; step <= sizeof(stream); step++) {
        frame_all(stream, sizeof(stream) - 1, step, out, sizeof(out), &tl);
        assert_string_equal(out, "line one|line two||line four|");
        assert_int_equal(tl, 0);
    }
}

static void
test_framer_too_long(void **state)
{
    size_t big = MAILLOG_MAX_LINE + 10, len = big + 32;
    char *in = malloc(len), out[256];
    int tl;

    (void)state;
    memset(in, 'x', len);
    memcpy(in, "a\n", 2);
    in[2 + big] = '\n';
    memcpy(in + 3 + big, "b\n", 2);
    in[5 + big] = '\n';
    len = 6 + big;
    for (size_t step = 1000; step <= len; step += 1000) {
        frame_all(in, len, step, out, sizeof(out), &tl);
        assert_string_equal(out, "a|b||");
        assert_int_equal(tl, 1);
    }
    /* exactly at the limit is fine */
    memset(in, 'y', MAILLOG_MAX_LINE);
    in[MAILLOG_MAX_LINE] = '\n';
    frame_all(in, MAILLOG_MAX_LINE + 1, 7, out, 4, &tl);
    assert_int_equal(tl, 0);
    free(in);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_service_and_host),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_year_rollover),
        cmocka_unit_test(test_year_guess),
        cmocka_unit_test(test_framer_any_split),
        cmocka_unit_test(test_framer_too_long),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
