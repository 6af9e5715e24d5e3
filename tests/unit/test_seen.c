/*
 * test_seen.c — src/daemon/seen.c: what `chokepoint show` lists of the
 * logins, client addresses and HELOs of accounts under suspicion: counts
 * and times per value, the least recently seen value replaced (and
 * counted) when an account has more than SEEN_PER, the least recently
 * noted account evicted past SEEN_ACCOUNTS, and a clock step back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/daemon.h"

static struct cp_event
event(const char *login, const char *client, const char *helo)
{
    struct cp_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.sasl_username = (struct str){login, login ? strlen(login) : 0};
    ev.client_address = (struct str){client, client ? strlen(client) : 0};
    ev.helo_name = (struct str){helo, helo ? strlen(helo) : 0};
    return ev;
}

static const struct seen_item *
item(const struct seen_list *l, const char *v)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].s, v) == 0)
            return &l->v[i];
    return NULL;
}

static void
test_counts_and_times(void **state)
{
    struct seen *s = seen_new();
    struct cp_event a = event("zed@isp.example", "192.0.2.7", "pc1");
    struct cp_event b = event("zed@isp.example", "192.0.2.8", NULL);
    const struct seen_list *l;
    const struct seen_item *it;

    (void)state;
    assert_null(seen_get(s, "u:zed", 5, SEEN_CLIENT));
    seen_note(s, "u:zed", 5, &a, 1000);
    seen_note(s, "u:zed", 5, &b, 2000);
    seen_note(s, "u:zed", 5, &a, 3000);
    l = seen_get(s, "u:zed", 5, SEEN_CLIENT);
    assert_non_null(l);
    assert_int_equal(l->n, 2);
    it = item(l, "192.0.2.7");
    assert_non_null(it);
    assert_int_equal(it->count, 2);
    assert_int_equal(it->first_ms, 1000);
    assert_int_equal(it->last_ms, 3000);
    l = seen_get(s, "u:zed", 5, SEEN_LOGIN);
    assert_int_equal(l->n, 1);
    assert_int_equal(l->v[0].count, 3);
    /* an absent HELO is not a value */
    l = seen_get(s, "u:zed", 5, SEEN_HELO);
    assert_int_equal(l->n, 1);
    assert_string_equal(l->v[0].s, "pc1");
    /* another account's are its own */
    assert_null(seen_get(s, "u:ann", 5, SEEN_CLIENT));
    seen_free(s);
}

static void
test_more_values_than_kept(void **state)
{
    struct seen *s = seen_new();
    const struct seen_list *l;
    char client[32], helo[SEEN_LEN + 40];

    (void)state;
    for (int i = 0; i < SEEN_PER + 2; i++) {
        struct cp_event ev;

        snprintf(client, sizeof(client), "198.51.100.%d", i);
        ev = event("zed", client, NULL);
        seen_note(s, "u:zed", 5, &ev, 1000 + i);
        /* the first address goes on being used: it stays */
        ev = event("zed", "198.51.100.0", NULL);
        seen_note(s, "u:zed", 5, &ev, 1000 + i);
    }
    l = seen_get(s, "u:zed", 5, SEEN_CLIENT);
    assert_int_equal(l->n, SEEN_PER);
    assert_int_equal(l->more, 2);
    assert_non_null(item(l, "198.51.100.0"));
    assert_null(item(l, "198.51.100.1")); /* the least recently seen */
    assert_null(item(l, "198.51.100.2"));
    assert_non_null(item(l, "198.51.100.7"));
    /* a long value is cut, not refused */
    memset(helo, 'h', sizeof(helo) - 1);
    helo[sizeof(helo) - 1] = '\0';
    {
        struct cp_event ev = event("zed", NULL, helo);

        seen_note(s, "u:zed", 5, &ev, 5000);
        seen_note(s, "u:zed", 5, &ev, 5001);
    }
    l = seen_get(s, "u:zed", 5, SEEN_HELO);
    assert_int_equal(l->n, 1);
    assert_int_equal(strlen(l->v[0].s), SEEN_LEN - 1);
    assert_int_equal(l->v[0].count, 2);
    seen_free(s);
}

static void
test_oldest_account_evicted(void **state)
{
    struct seen *s = seen_new();
    struct cp_event ev = event("x", "192.0.2.1", NULL);
    char key[32];

    (void)state;
    for (int i = 0; i <= SEEN_ACCOUNTS; i++) {
        int n = snprintf(key, sizeof(key), "u:a%d", i);

        /* a0 keeps sending: it is not the one evicted; the clock steps
         * back once on the way */
        seen_note(s, key, (size_t)n, &ev, i == 100 ? 10 : 1000 + i);
        seen_note(s, "u:a0", 4, &ev, 1000 + i);
    }
    assert_non_null(seen_get(s, "u:a0", 4, SEEN_CLIENT));
    assert_null(seen_get(s, "u:a1", 4, SEEN_CLIENT));
    assert_non_null(seen_get(s, "u:a2", 4, SEEN_CLIENT));
    snprintf(key, sizeof(key), "u:a%d", SEEN_ACCOUNTS);
    assert_non_null(seen_get(s, key, strlen(key), SEEN_CLIENT));
    /* an empty or over-long key is not noted */
    seen_note(s, "", 0, &ev, 9999);
    assert_null(seen_get(s, "", 0, SEEN_CLIENT));
    seen_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_times),
        cmocka_unit_test(test_more_values_than_kept),
        cmocka_unit_test(test_oldest_account_evicted),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
