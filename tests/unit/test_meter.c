/* test_meter.c — leaky-bucket semantics of one metering operation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/store.h"

#define HOUR 3600000

static const struct cp_slot slots[2] = {{CP_METRIC_MESSAGES, HOUR, "messages/1h"},
                                        {CP_METRIC_DOMAINS, HOUR, "domains/1h"}};

static void
op_init(struct cp_meter_op *op, int64_t now, double max, bool enforce)
{
    memset(op, 0, sizeof(*op));
    op->key = "k";
    op->keylen = 1;
    op->now_ms = now;
    op->slots = slots;
    op->nslots = 2;
    op->nrules = 1;
    op->rule[0].slot = 0;
    op->rule[0].enforce = enforce;
    op->rule[0].cap = max;
    op->rule[0].rate = max / HOUR;
    op->rule[0].cost = 1;
}

static int
send_at(struct cp_counters *c, int64_t now, double max, bool enforce)
{
    struct cp_meter_op op;
    struct cp_meter_result res;

    op_init(&op, now, max, enforce);
    cp_meter_apply(c, &op, &res);
    return res.denied;
}

static void
test_burst_then_refill(void **state)
{
    struct cp_counters c;

    (void)state;
    memset(&c, 0, sizeof(c));
    for (int i = 0; i < 10; i++)
        assert_int_equal(send_at(&c, 0, 10, true), -1);
    assert_int_equal(send_at(&c, 0, 10, true), 0);
    /* one unit drains every 6 minutes: not yet at 5 min, yes at 6 */
    assert_int_equal(send_at(&c, 5 * 60000, 10, true), 0);
    assert_int_equal(send_at(&c, 6 * 60000, 10, true), -1);
    assert_int_equal(send_at(&c, 6 * 60000, 10, true), 0);
    /* a denied request added nothing: level is exactly at the cap */
    assert_true(cp_meter_level_now(&c, 0, 10.0 / HOUR, 6 * 60000) <= 10.0);
}

static void
test_no_boundary_doubling(void **state)
{
    struct cp_counters c;
    int passed = 0;

    (void)state;
    memset(&c, 0, sizeof(c));
    /* 10 at t=59 min, then as many as possible at t=61 min: a fixed window
     * would let 10 more through; the bucket lets through only what drained */
    for (int i = 0; i < 10; i++)
        assert_int_equal(send_at(&c, 59 * 60000, 10, true), -1);
    for (int i = 0; i < 10; i++)
        passed += send_at(&c, 61 * 60000, 10, true) < 0;
    assert_int_equal(passed, 0);
}

static void
test_limit_change_keeps_history(void **state)
{
    struct cp_counters c;

    (void)state;
    memset(&c, 0, sizeof(c));
    for (int i = 0; i < 5; i++)
        send_at(&c, 0, 5, true);
    assert_int_equal(send_at(&c, 0, 5, true), 0);
    /* raised to 8: the 5 already sent still count, 3 more fit */
    for (int i = 0; i < 3; i++)
        assert_int_equal(send_at(&c, 0, 8, true), -1);
    assert_int_equal(send_at(&c, 0, 8, true), 0);
}

static void
test_shadow_counts(void **state)
{
    struct cp_counters c;
    struct cp_meter_op op;
    struct cp_meter_result res;

    (void)state;
    memset(&c, 0, sizeof(c));
    for (int i = 0; i < 3; i++)
        send_at(&c, 0, 2, false);
    op_init(&op, 0, 2, false);
    cp_meter_apply(&c, &op, &res);
    assert_int_equal(res.denied, -1);
    assert_int_equal(res.over, 1);
    assert_true(c.level[0] > 3.99f && c.level[0] < 4.01f);
}

static void
test_release_clamps(void **state)
{
    struct cp_counters c;
    struct cp_meter_op op;
    struct cp_meter_result res;

    (void)state;
    memset(&c, 0, sizeof(c));
    send_at(&c, 0, 10, true);
    memset(&op, 0, sizeof(op));
    op.slots = slots;
    op.nslots = 2;
    op.release[CP_METRIC_MESSAGES] = 5;
    cp_meter_apply(&c, &op, &res);
    assert_true(c.level[0] == 0.0f);
}

static void
test_domains(void **state)
{
    struct cp_counters c;
    struct cp_meter_op op;
    struct cp_meter_result res;

    (void)state;
    memset(&c, 0, sizeof(c));
    op_init(&op, 0, 2, true);
    op.rule[0].slot = 1;
    op.rule[0].domain = true;
    op.domain_hash = 111;
    cp_meter_apply(&c, &op, &res);
    assert_true(res.new_domain);
    cp_meter_apply(&c, &op, &res); /* same domain: free */
    assert_false(res.new_domain);
    assert_int_equal(res.denied, -1);
    op.domain_hash = 222;
    cp_meter_apply(&c, &op, &res);
    assert_int_equal(res.denied, -1);
    op.domain_hash = 333; /* a third new domain exceeds 2 */
    cp_meter_apply(&c, &op, &res);
    assert_int_equal(res.denied, 0);
    op.domain_hash = 111; /* a known one still passes */
    cp_meter_apply(&c, &op, &res);
    assert_int_equal(res.denied, -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refill),
        cmocka_unit_test(test_no_boundary_doubling),
        cmocka_unit_test(test_limit_change_keeps_history),
        cmocka_unit_test(test_shadow_counts),
        cmocka_unit_test(test_release_clamps),
        cmocka_unit_test(test_domains),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
