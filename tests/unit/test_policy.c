/* test_policy.c — the policy codec: framing, limits, any split of input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/policy.h"

static const struct policy_limits lim = {64, 8, 512};

static const char req2[] = "request=smtpd_access_policy\n"
                           "protocol_state=RCPT\n"
                           "sasl_username=alice@example.net\n"
                           "recipient=bob@example.com\n"
                           "\n"
                           "request=smtpd_access_policy\n"
                           "protocol_state=END-OF-MESSAGE\n"
                           "recipient_count=2\n"
                           "\n";

/* Feed `in` in chunks of `step` bytes; count requests; return last status. */
static enum policy_status
feed_chunks(struct policy_parser *p, const char *in, size_t len, size_t step,
            int *nreq, struct policy_request *last)
{
    size_t off = 0;
    enum policy_status st = POLICY_NEED_MORE;

    *nreq = 0;
    while (off < len) {
        size_t n = len - off < step ? len - off : step, used = 0, o = 0;

        while (o < n) {
            st = policy_feed(p, in + off + o, n - o, &used);
            o += used;
            if (st == POLICY_REQUEST) {
                (*nreq)++;
                policy_request_get(p, last);
            } else if (st != POLICY_NEED_MORE) {
                return st;
            }
        }
        off += n;
    }
    return st;
}

static void
test_every_split(void **state)
{
    (void)state;
    for (size_t step = 1; step <= sizeof(req2); step++) {
        struct policy_parser p;
        struct policy_request r;
        int n;

        policy_parser_init(&p, &lim);
        assert_int_equal(feed_chunks(&p, req2, sizeof(req2) - 1, step, &n, &r),
                         POLICY_REQUEST);
        assert_int_equal(n, 2);
        assert_true(str_eq(r.protocol_state, "END-OF-MESSAGE"));
        assert_true(str_eq(r.recipient_count, "2"));
        assert_null(r.sasl_username.p);
        policy_parser_fini(&p);
    }
}

static void
test_fields(void **state)
{
    struct policy_parser p;
    struct policy_request r;
    size_t used;

    (void)state;
    policy_parser_init(&p, &lim);
    assert_int_equal(policy_feed(&p, req2, sizeof(req2) - 1, &used),
                     POLICY_REQUEST);
    policy_request_get(&p, &r);
    assert_true(str_eq(r.request, "smtpd_access_policy"));
    assert_true(str_eq(r.sasl_username, "alice@example.net"));
    assert_true(str_eq(r.recipient, "bob@example.com"));
    assert_null(r.client_address.p);
    assert_false(policy_parser_pending(&p));
    policy_parser_fini(&p);
}

static enum policy_status
feed_all(const char *in)
{
    struct policy_parser p;
    struct policy_request r;
    int n;
    enum policy_status st;

    policy_parser_init(&p, &lim);
    st = feed_chunks(&p, in, strlen(in), 7, &n, &r);
    policy_parser_fini(&p);
    return st;
}

static void
test_limits(void **state)
{
    char line[200];

    (void)state;
    /* a 64-byte line is fine, 65 is not */
    memset(line, 'a', sizeof(line));
    memcpy(line, "x=", 2);
    line[64] = '\n';
    line[65] = '\n';
    line[66] = '\0';
    assert_int_equal(feed_all(line), POLICY_REQUEST);
    memset(line, 'a', sizeof(line));
    memcpy(line, "x=", 2);
    line[65] = '\n';
    line[66] = '\0';
    assert_int_equal(feed_all(line), POLICY_ERR_LINE);
    /* an unterminated long line is refused before its newline arrives */
    memset(line, 'a', 100);
    line[100] = '\0';
    assert_int_equal(feed_all(line), POLICY_ERR_LINE);
    assert_int_equal(feed_all("a=1\nb=2\nc=3\nd=4\ne=5\nf=6\ng=7\nh=8\ni=9\n\n"),
                     POLICY_ERR_ATTRIBUTES);
    assert_int_equal(feed_all("a=1\nb=2\nc=3\nd=4\ne=5\nf=6\ng=7\nh=8\n\n"),
                     POLICY_REQUEST);
    assert_int_equal(feed_all("novalue\n\n"), POLICY_ERR_SYNTAX);
    assert_int_equal(feed_all("=value\n\n"), POLICY_ERR_SYNTAX);
    assert_int_equal(feed_all("empty=\r\n\r\n"), POLICY_REQUEST);
}

static void
test_request_size(void **state)
{
    struct policy_limits small = {64, 100, 300};
    struct policy_parser p;
    char buf[1000];
    size_t used, len = 0;

    (void)state;
    while (len < 600)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                                "attribute%03zu=value\n", len);
    policy_parser_init(&p, &small);
    assert_int_equal(policy_feed(&p, buf, len, &used), POLICY_ERR_REQUEST);
    assert_true(used <= 300);
    policy_parser_fini(&p);
}

static void
test_reply_injection(void **state)
{
    struct strbuf sb;

    (void)state;
    sb_init(&sb);
    policy_format_reply(&sb, "DUNNO", NULL);
    assert_string_equal(sb.data, "action=DUNNO\n\n");
    sb_reset(&sb);
    policy_format_reply(&sb, "DEFER_IF_PERMIT",
                        "4.7.1 x\n\naction=REJECT\r\n");
    assert_string_equal(sb.data,
                        "action=DEFER_IF_PERMIT 4.7.1 x  action=REJECT  \n\n");
    sb_fini(&sb);
}

/* The typed event: stages, numbers as numbers, a bad number named. */
static void
test_event(void **state)
{
    struct policy_request r;
    struct cp_event ev;
    struct str bad;

    (void)state;
    memset(&r, 0, sizeof(r));
    r.protocol_state = str_c("END-OF-MESSAGE");
    r.sasl_username = str_c("alice");
    r.encryption_protocol = str_c("TLSv1.3");
    r.size = str_c("2048");
    r.recipient_count = str_c("3");
    assert_null(policy_event(&r, &ev, &bad));
    assert_int_equal(ev.stage, CP_STAGE_EOM);
    assert_int_equal(ev.size, 2048);
    assert_int_equal(ev.recipient_count, 3);
    assert_true(str_eq(ev.sasl_username, "alice"));
    assert_true(str_eq(ev.tls_protocol, "TLSv1.3"));
    r.protocol_state = str_c("RCPT");
    r.size = str_c(NULL); /* absent: 0 (an older MTA) */
    assert_null(policy_event(&r, &ev, &bad));
    assert_int_equal(ev.stage, CP_STAGE_RCPT);
    assert_int_equal(ev.size, 0);
    r.protocol_state = str_c("VRFY");
    assert_null(policy_event(&r, &ev, &bad));
    assert_int_equal(ev.stage, CP_STAGE_OTHER);
    r.size = str_c("12k");
    assert_string_equal(policy_event(&r, &ev, &bad), "size");
    assert_true(str_eq(bad, "12k"));
    r.size = str_c("1099511627777"); /* 2^40 + 1: out of range */
    assert_string_equal(policy_event(&r, &ev, &bad), "size");
    r.size = str_c("10");
    r.recipient_count = str_c("-1");
    assert_string_equal(policy_event(&r, &ev, &bad), "recipient_count");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_request_size),
        cmocka_unit_test(test_reply_injection),
        cmocka_unit_test(test_event),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
