/* test_util.c — number/duration parsing, addresses, hash table, escaping. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "util/hmap.h"
#include "util/inet.h"
#include "util/parse.h"
#include "util/redisurl.h"
#include "util/strbuf.h"

static void
test_parse(void **state)
{
    uint64_t v;
    char buf[32];

    (void)state;
    assert_true(parse_u64("18446744073709551615", 20, &v));
    assert_false(parse_u64("18446744073709551616", 20, &v));
    assert_false(parse_u64("-1", 2, &v));
    assert_false(parse_u64("", 0, &v));
    assert_true(parse_duration_ms("90s", 3, &v) && v == 90000);
    assert_true(parse_duration_ms("1d", 2, &v) && v == 86400000);
    assert_true(parse_duration_ms("250ms", 5, &v) && v == 250);
    assert_true(parse_duration_ms("7", 1, &v) && v == 7000);
    assert_false(parse_duration_ms("1y", 2, &v));
    assert_false(parse_duration_ms("h", 1, &v));
    assert_true(parse_size("20M", 3, &v) && v == 20971520);
    assert_true(parse_size("20MB", 4, &v) && v == 20971520);
    assert_false(parse_size("99999999999999999999G", 21, &v));
    format_duration(buf, sizeof(buf), 3600000);
    assert_string_equal(buf, "1h");
    format_duration(buf, sizeof(buf), 5400000);
    assert_string_equal(buf, "90m");
    format_duration(buf, sizeof(buf), 1500);
    assert_string_equal(buf, "1500ms");
}

static void
test_inet(void **state)
{
    struct inet_addr a;
    unsigned plen;
    char buf[INET_PREFIX_STRLEN];

    (void)state;
    assert_true(inet_parse_prefix("10.1.2.3/8", 10, &a, &plen));
    inet_format_prefix(buf, sizeof(buf), &a, plen);
    assert_string_equal(buf, "10.0.0.0/8");
    assert_true(inet_parse_prefix("2001:db8::1/33", 14, &a, &plen));
    inet_format_prefix(buf, sizeof(buf), &a, plen);
    assert_string_equal(buf, "2001:db8::/33");
    assert_false(inet_parse("1.2.3.4\0", 8, &a));
    assert_false(inet_parse("1.2.3.256", 9, &a));
    assert_false(inet_parse_prefix("1.2.3.4/", 8, &a, &plen));
    assert_true(inet_parse("::ffff:1.2.3.4", 14, &a) && a.family == 6);
}

static bool
int_eq(const void *val, const void *key, size_t len)
{
    (void)len;
    return *(const int *)val == *(const int *)key;
}

static void
test_hmap(void **state)
{
    enum { N = 5000 };
    static int vals[N];
    struct hmap m;

    (void)state;
    hmap_init(&m, 0);
    for (int i = 0; i < N; i++) {
        vals[i] = i;
        /* a weak hash forces long probe runs through backward shifts */
        hmap_put(&m, (uint64_t)(i % 97), &vals[i]);
    }
    for (int i = 0; i < N; i += 2)
        assert_ptr_equal(hmap_del(&m, (uint64_t)(i % 97), &i, sizeof(i),
                                  int_eq),
                         &vals[i]);
    assert_int_equal(m.count, N / 2);
    for (int i = 0; i < N; i++) {
        void *v = hmap_get(&m, (uint64_t)(i % 97), &i, sizeof(i), int_eq);

        if (i % 2)
            assert_ptr_equal(v, &vals[i]);
        else
            assert_null(v);
    }
    hmap_fini(&m);
}

static void
test_escape(void **state)
{
    char out[32];
    struct strbuf sb;

    (void)state;
    assert_string_equal(str_escape(out, sizeof(out), "a\nb\\\xff", 5, 100),
                        "a\\x0ab\\x5c\\xff");
    assert_string_equal(str_escape(out, sizeof(out), "abcdefgh", 8, 4),
                        "abcd...");
    assert_string_equal(str_escape(out, 8, "\x01\x02\x03", 3, 100),
                        "\\x01...");
    sb_init(&sb);
    sb_json_str(&sb, "q\"\\\n\x01", 5);
    assert_string_equal(sb.data, "\"q\\\"\\\\\\u000a\\u0001\"");
    /* valid UTF-8 kept; invalid bytes and a cut character escaped */
    sb_reset(&sb);
    sb_json_str(&sb, "\xc3\xa9\xff\xc3", 4);
    assert_string_equal(sb.data, "\"\xc3\xa9\\u00ff\\u00c3\"");
    sb_reset(&sb);
    sb_json_str(&sb, "\xed\xa0\x80\xe0\x80\xaf", 6); /* surrogate, overlong */
    assert_string_equal(sb.data,
                        "\"\\u00ed\\u00a0\\u0080\\u00e0\\u0080\\u00af\"");
    sb_fini(&sb);
}

/* A measured number is always written with a fraction: one JSON type
 * per field (it was 720 in one line and 719.999 in the next). */
static void
test_json_num(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {{720, "720.0"},      {719.999, "719.999"}, {16.5, "16.5"},
                 {0, "0.0"},          {-0.0001, "0.0"},     {-2.25, "-2.25"},
                 {1e15, "1000000000000000.0"}, {0.0004, "0.0"}};
    struct strbuf sb;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sb_init(&sb);
        sb_json_num(&sb, cases[i].v);
        assert_string_equal(sb.data, cases[i].want);
        sb_fini(&sb);
    }
    sb_init(&sb);
    sb_json_num(&sb, NAN);
    sb_json_ku64(&sb, "n", 720, false);
    assert_string_equal(sb.data, "null,\"n\":720");
    sb_fini(&sb);
}

/* A ratio (the simulator's): 6 significant digits, and a fraction or an
 * exponent even when it is whole (it was 1 in one report, 0.5 in the
 * next). */
static void
test_json_real(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {{1, "1.0"},          {0, "0.0"},
                 {0.5, "0.5"},        {0.000123456, "0.000123456"},
                 {123456.5, "123456.0"}, {1234567.5, "1.23457e+06"},
                 {-3, "-3.0"},        {1e-7, "1e-07"}};
    struct strbuf sb;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sb_init(&sb);
        sb_json_kreal(&sb, "r", cases[i].v, true);
        assert_string_equal(sb.data + 4, cases[i].want);
        sb_fini(&sb);
    }
    sb_init(&sb);
    sb_json_kreal(&sb, "r", NAN, true);
    assert_string_equal(sb.data, "\"r\":null");
    sb_fini(&sb);
}

/* store.redis: every form an operator writes, and what is refused */
static void
test_redis_url(void **state)
{
    static const struct {
        const char *in;
        const char *host, *path, *user, *pass;
        int port;
        unsigned db;
        const char *why; /* a fragment of the refusal, or NULL */
    } cases[] = {
        {"redis://127.0.0.1", "127.0.0.1", "", "", "", 6379, 0, NULL},
        {"redis://r1.isp.example:6380/3", "r1.isp.example", "", "", "", 6380,
         3, NULL},
        {"redis://[::1]:7000", "::1", "", "", "", 7000, 0, NULL},
        {"redis://:pw@h", "h", "", "", "pw", 6379, 0, NULL},
        {"redis://cp:p%40ss%3Aw@h:1/2", "h", "", "cp", "p@ss:w", 1, 2, NULL},
        {"redis://a:b@c@h", "h", "", "a", "b@c", 6379, 0, NULL},
        {"unix:/run/redis/redis.sock", "", "/run/redis/redis.sock", "", "",
         0, 0, NULL},
        {"unix:/s?db=9", "", "/s", "", "", 0, 9, NULL},
        {"rediss://u:pw@h:6380/1", "h", "", "u", "pw", 6380, 1, NULL},
        {"rediss:/h", NULL, NULL, NULL, NULL, 0, 0, "expected redis://"},
        {"http://h", NULL, NULL, NULL, NULL, 0, 0, "expected redis://"},
        {"redis://", NULL, NULL, NULL, NULL, 0, 0, "no host"},
        {"redis://h:0", NULL, NULL, NULL, NULL, 0, 0, "port"},
        {"redis://h:65536", NULL, NULL, NULL, NULL, 0, 0, "port"},
        {"redis://h:x", NULL, NULL, NULL, NULL, 0, 0, "port"},
        {"redis://h/65536", NULL, NULL, NULL, NULL, 0, 0, "database"},
        {"redis://h/x", NULL, NULL, NULL, NULL, 0, 0, "database"},
        {"redis://pw@h", NULL, NULL, NULL, NULL, 0, 0, "USER:PASSWORD"},
        {"redis://:p%4@h", NULL, NULL, NULL, NULL, 0, 0, "escape"},
        {"redis://:p%00@h", NULL, NULL, NULL, NULL, 0, 0, "escape"},
        {"redis://[::1", NULL, NULL, NULL, NULL, 0, 0, "']'"},
        {"redis://h st", NULL, NULL, NULL, NULL, 0, 0, "character"},
        {"unix:relative", NULL, NULL, NULL, NULL, 0, 0, "unix:/PATH"},
        {"unix:/s?x=1", NULL, NULL, NULL, NULL, 0, 0, "db=N"},
    };
    struct redis_url u;
    char where[300];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *why = redis_url_parse(cases[i].in, strlen(cases[i].in),
                                          &u);

        if (cases[i].why != NULL) {
            assert_non_null(why);
            assert_non_null(strstr(why, cases[i].why));
            continue;
        }
        assert_null(why);
        assert_string_equal(u.host, cases[i].host);
        assert_string_equal(u.path, cases[i].path);
        assert_string_equal(u.user, cases[i].user);
        assert_string_equal(u.password, cases[i].pass);
        assert_int_equal(u.has_password, cases[i].pass[0] != '\0');
        assert_int_equal(u.port, cases[i].port);
        assert_int_equal(u.db, cases[i].db);
        assert_int_equal(u.tls, strncmp(cases[i].in, "rediss:", 7) == 0);
    }
    /* a length, not a NUL, ends the input; logs never show the password */
    assert_null(redis_url_parse("redis://:secret@h:1XYZ", 19, &u));
    assert_int_equal(u.port, 1);
    redis_url_where(&u, where, sizeof(where));
    assert_string_equal(where, "h:1");
    assert_null(redis_url_parse("redis://[fe80::1]", 17, &u));
    redis_url_where(&u, where, sizeof(where));
    assert_string_equal(where, "[fe80::1]:6379");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_json_num),
        cmocka_unit_test(test_json_real),
        cmocka_unit_test(test_inet),
        cmocka_unit_test(test_hmap),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_redis_url),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
