/* test_util.c — number/duration parsing, addresses, hash table, escaping. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "util/hmap.h"
#include "util/inet.h"
#include "util/parse.h"
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
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
