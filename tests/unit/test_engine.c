/* test_engine.c — decisions and two-phase accounting on a virtual clock,
 * with the embedded memory store. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/engine.h"
#include "core/evidence.h"
#include "core/lifecycle.h"
#include "core/policy.h"
#include "engine_fixture.h"

#define MIN 60000

static const char yaml_fmt[] =
    "daemon:\n"
    "  listen: [unix:/tmp/x.sock]\n"
    "  shadow: %s\n"
    "identity:\n"
    "  customer_map: %s\n"
    "  ipv4_prefix: 24\n"
    "accounting:\n"
    "  reservation_timeout: 10m\n"
    "  max_pending: 16\n"
    "classes:\n"
    "  residential:\n"
    "    limits:\n"
    "      - { metric: messages, window: 1h, max: 3 }\n"
    "      - { metric: recipients, window: 1h, max: 5 }\n"
    "      - { metric: bytes, window: 1h, max: 1000 }\n"
    "      - { metric: domains, window: 1h, max: 100, shadow: true }\n"
    "  unauthenticated:\n"
    "    limits:\n"
    "      - { metric: messages, window: 1h, max: 2, action: reject }\n";

static int
setup_mode(void **state, const char *shadow)
{
    char yaml[2048];

    snprintf(yaml, sizeof(yaml), yaml_fmt, shadow,
             tmpfile_with(1, "a@x c1\nb@x c1\n"));
    *state = fixture_new(yaml);
    return 0;
}

static int
setup(void **state)
{
    return setup_mode(state, "false");
}

static int
setup_shadow(void **state)
{
    return setup_mode(state, "true");
}

static int
teardown(void **state)
{
    return fixture_teardown(state);
}

static struct str
S(const char *s)
{
    struct str r = {s, s ? strlen(s) : 0};

    return r;
}

/* ask() decides in two steps, as fleet mode does (cp_engine_decide_async,
 * then cp_engine_resume with no answer from the shared store) */
static bool two_step;

static enum cp_action
ask(struct fixture *f, int64_t now, const char *stage, const char *user,
    const char *client, const char *inst, const char *rcpt,
    const char *count, const char *size, struct cp_decision *d)
{
    struct policy_request r;
    struct cp_event ev;
    struct str bad;
    struct cp_decision local;

    memset(&r, 0, sizeof(r));
    r.request = S("smtpd_access_policy");
    r.protocol_state = S(stage);
    r.sasl_username = S(user);
    r.client_address = S(client);
    r.instance = S(inst);
    r.recipient = S(rcpt);
    r.recipient_count = S(count);
    r.size = S(size);
    assert_null(policy_event(&r, &ev, &bad));
    if (two_step) { /* fleet mode's path, Redis unreachable */
        struct cp_await aw;

        if (cp_engine_decide_async(&f->e, &ev, now, d ? d : &local, &aw) ==
            CP_DECIDE_AWAIT)
            cp_engine_resume(&f->e, &ev, now, d ? d : &local, &aw, NULL,
                             NULL);
    } else {
        cp_engine_decide(&f->e, &ev, now, d ? d : &local);
    }
    return (d ? d : &local)->action;
}

static void
sender_request(struct policy_request *r, const char *stage, const char *user,
               const char *sender, const char *rcpt, const char *inst)
{
    memset(r, 0, sizeof(*r));
    r->request = S("smtpd_access_policy");
    r->protocol_state = S(stage);
    r->sasl_username = S(user);
    r->client_address = S("10.0.0.1");
    r->instance = S(inst);
    r->sender = S(sender);
    r->recipient = S(rcpt);
}

/* One RCPT of a message from `sender` ("": the null sender). */
static void
rcpt_from(struct fixture *f, int64_t now, const char *user,
          const char *sender, const char *rcpt, const char *inst,
          struct cp_decision *d)
{
    struct policy_request r;
    struct cp_event ev;
    struct str bad;

    sender_request(&r, "RCPT", user, sender, rcpt, inst);
    assert_null(policy_event(&r, &ev, &bad));
    cp_engine_decide(&f->e, &ev, now, d);
}

/* A message from `sender` ("": the null sender) to `rcpt`: its RCPT
 * (the decision in *d) and END-OF-MESSAGE with a queue id. */
static void
queue_from(struct fixture *f, int64_t now, const char *user,
           const char *sender, const char *rcpt, const char *inst,
           const char *qid, struct cp_decision *d)
{
    struct policy_request r;
    struct cp_event ev;
    struct str bad;
    struct cp_decision eom;

    rcpt_from(f, now, user, sender, rcpt, inst, d);
    sender_request(&r, "END-OF-MESSAGE", user, sender, NULL, inst);
    r.recipient_count = S("1");
    r.size = S("10");
    r.queue_id = S(qid);
    assert_null(policy_event(&r, &ev, &bad));
    cp_engine_decide(&f->e, &ev, now, &eom);
}

/* The login's own message to r@y, with a queue id. */
static void
queue_msg(struct fixture *f, int64_t now, const char *user, const char *inst,
          const char *qid)
{
    struct cp_decision d;

    queue_from(f, now, user, user, "r@y", inst, qid, &d);
}

/* Login `user`'s evidence record. */
static struct cp_evidence *
evidence_of(struct fixture *f, const char *user)
{
    struct cp_account_ref ref;
    char key[64];

    snprintf(key, sizeof(key), "u:%s", user);
    assert_true(f->e.store->ops->account(f->e.store, key, strlen(key), false,
                                         true, &ref));
    assert_non_null(ref.ev);
    return ref.ev;
}

/* What one outcome adds to signal s of login `user`'s evidence. */
static double
outcome_adds(struct fixture *f, const char *user, const char *qid,
             const char *rcpt, enum cp_outcome o, enum cp_signal s,
             int64_t now)
{
    struct cp_decision d;
    double before = evidence_of(f, user)->sig[s];

    assert_int_equal(cp_engine_outcome(&f->e, qid, strlen(qid), rcpt,
                                       strlen(rcpt), o, now, &d),
                     1);
    return evidence_of(f, user)->sig[s] - before;
}

/* Mail an account passes on for others: a bounce or automatic reply
 * (null sender, one recipient) goes where whoever wrote in decides, and
 * its outcomes are no evidence; a forward (another's sender, to the one
 * address it delivers to) is refused there for what it forwards, and its
 * outcomes count a quarter; a forward to an address the account has
 * delivered to is no forgery. The login's own mail counts in full. */
static void
test_replies_and_forwards_count_less(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;
    const int64_t H = 3600000;

    queue_from(f, 0, "a@x", "", "gone@y", "i1", "Q1", &d);
    queue_from(f, 0, "b@x", "b@x", "gone@y", "i2", "Q2", &d);
    assert_float_equal(outcome_adds(f, "a@x", "Q1", "gone@y",
                                    CP_OUT_BAD_RECIPIENT,
                                    CP_SIG_BAD_RECIPIENT, 1000),
                       0.0, 1e-6);
    assert_float_equal(outcome_adds(f, "b@x", "Q2", "gone@y",
                                    CP_OUT_BAD_RECIPIENT,
                                    CP_SIG_BAD_RECIPIENT, 1000),
                       2.0, 1e-3);
    /* the first forward: the address is new, the sender a forgery */
    queue_from(f, 2 * H, "a@x", "z@elsewhere.example", "me@mailbox.example",
               "i3", "Q3", &d);
    assert_true(d.fired & (1u << CP_SIG_FORGED_SENDER));
    assert_float_equal(outcome_adds(f, "a@x", "Q3", "me@mailbox.example",
                                    CP_OUT_DELIVERED, CP_SIG_DELIVERED,
                                    2 * H + 1000),
                       -0.25, 1e-3);
    /* delivered there before: a forward; refused as spam, a quarter */
    queue_from(f, 3 * H, "a@x", "w@other.example", "me@mailbox.example",
               "i4", "Q4", &d);
    assert_false(d.fired & (1u << CP_SIG_FORGED_SENDER));
    assert_float_equal(outcome_adds(f, "a@x", "Q4", "me@mailbox.example",
                                    CP_OUT_REJECTED, CP_SIG_REMOTE_REJECT,
                                    3 * H + 1000),
                       0.375, 1e-3);
    /* a forward refused at a new address: in full, but the address
     * exists and the account's mail goes there: the next is a forward */
    queue_from(f, 4 * H, "a@x", "v@third.example", "me2@mailbox.example",
               "i6", "Q6", &d);
    assert_float_equal(outcome_adds(f, "a@x", "Q6", "me2@mailbox.example",
                                    CP_OUT_REJECTED, CP_SIG_REMOTE_REJECT,
                                    4 * H + 1000),
                       1.5, 1e-3);
    queue_from(f, 4 * H + 2000, "a@x", "u@fourth.example",
               "me2@mailbox.example", "i7", "Q7", &d);
    assert_false(d.fired & (1u << CP_SIG_FORGED_SENDER));
    assert_float_equal(outcome_adds(f, "a@x", "Q7", "me2@mailbox.example",
                                    CP_OUT_REJECTED, CP_SIG_REMOTE_REJECT,
                                    4 * H + 3000),
                       0.375, 1e-3);
    /* the login's own mail to that address, refused: in full */
    queue_from(f, 6 * H, "a@x", "a@x", "me@mailbox.example", "i5", "Q5", &d);
    assert_float_equal(outcome_adds(f, "a@x", "Q5", "me@mailbox.example",
                                    CP_OUT_REJECTED, CP_SIG_REMOTE_REJECT,
                                    6 * H + 1000),
                       1.5, 1e-3);
    assert_int_equal(f->e.stats.outcomes_relayed, 3);
}

/* What a reply or a forward leaves behind: a delivered reply makes its
 * recipient no known one (another's mail to it is forged), a refused
 * forward makes its address no delivered one (a bounce there is a bad
 * recipient, not a stale one); and a message whose first recipient is
 * a forward's address but which has another is forged after all. A
 * bounce to an address the login's own mail was delivered to is a list
 * gone stale. */
static void
test_what_replies_and_forwards_leave(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;
    const int64_t H = 3600000;

    queue_from(f, 0, "a@x", "", "asked@y", "i1", "Q1", &d);
    outcome_adds(f, "a@x", "Q1", "asked@y", CP_OUT_DELIVERED,
                 CP_SIG_DELIVERED, 1000);
    queue_from(f, H, "a@x", "z@elsewhere.example", "asked@y", "i2", "Q2",
               &d);
    assert_true(d.fired & (1u << CP_SIG_FORGED_SENDER));
    /* a forward refused: the address is a forward's, not a delivered one */
    queue_from(f, 2 * H, "b@x", "y@third.example", "box@y", "i3", "Q3",
               &d);
    outcome_adds(f, "b@x", "Q3", "box@y", CP_OUT_REJECTED,
                 CP_SIG_REMOTE_REJECT, 2 * H + 1000);
    queue_from(f, 3 * H, "b@x", "b@x", "box@y", "i4", "Q4", &d);
    assert_float_equal(outcome_adds(f, "b@x", "Q4", "box@y",
                                    CP_OUT_BAD_RECIPIENT,
                                    CP_SIG_BAD_RECIPIENT, 3 * H + 1000),
                       2.0, 1e-3);
    /* another's sender to the forward's address, then to a new one */
    rcpt_from(f, 4 * H, "b@x", "w@other.example", "box@y", "i5", &d);
    assert_false(d.fired & (1u << CP_SIG_FORGED_SENDER));
    rcpt_from(f, 4 * H, "b@x", "w@other.example", "new@y", "i5", &d);
    assert_true(d.fired & (1u << CP_SIG_FORGED_SENDER));
    /* the login's own mail delivered, then bounced: stale */
    queue_from(f, 5 * H, "a@x", "a@x", "old@y", "i6", "Q6", &d);
    outcome_adds(f, "a@x", "Q6", "old@y", CP_OUT_DELIVERED, CP_SIG_DELIVERED,
                 5 * H + 1000);
    queue_from(f, 6 * H, "a@x", "a@x", "old@y", "i7", "Q7", &d);
    assert_float_equal(outcome_adds(f, "a@x", "Q7", "old@y",
                                    CP_OUT_BAD_RECIPIENT,
                                    CP_SIG_STALE_RECIPIENT, 6 * H + 1000),
                       0.2, 1e-3);
    assert_int_equal(f->e.stats.outcomes_stale, 1);
    /* an alias the login uses as its own is its own mail, not a forward:
     * refused at an address it delivered to, in full */
    queue_from(f, 7 * H, "c@x", "c@home.example", "pal@y", "i8", "Q8", &d);
    outcome_adds(f, "c@x", "Q8", "pal@y", CP_OUT_DELIVERED, CP_SIG_DELIVERED,
                 7 * H + 1000);
    queue_from(f, 8 * H, "c@x", "c@home.example", "pal@y", "i9", "Q9", &d);
    assert_float_equal(outcome_adds(f, "c@x", "Q9", "pal@y", CP_OUT_REJECTED,
                                    CP_SIG_REMOTE_REJECT, 8 * H + 1000),
                       1.5, 1e-3);
}

static void
collect_qid(void *arg, const char *qid, size_t len)
{
    char *out = arg;
    size_t n = strlen(out);

    snprintf(out + n, 256 - n, "%.*s ", (int)len, qid);
}

static void
test_queue_ids_and_outcomes(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;
    char ids[256] = "";

    queue_msg(f, 0, "a@x", "i1", "4AbC1");
    queue_msg(f, 1000, "b@x", "i2", "4AbC2");
    queue_msg(f, 2000, "a@x", "i3", "4AbC3");
    assert_int_equal(cp_engine_queued_count(&f->e), 3);
    assert_int_equal(cp_engine_queued(&f->e, "c:c1", 4, collect_qid, ids), 3);
    assert_string_equal(ids, "4AbC1 4AbC2 4AbC3 ");
    assert_int_equal(cp_engine_outcome(&f->e, "4AbC1", 5, NULL, 0,
                                       CP_OUT_BAD_RECIPIENT, 3000, &d),
                     1);
    assert_string_equal(d.id.key, "c:c1");
    assert_true(d.detected);
    assert_true(d.fired & (1u << CP_SIG_BAD_RECIPIENT));
    assert_true(d.score > 0.5); /* +1.0 on top of -0.3 from the RCPTs */
    /* a second bad recipient of the same message adds; a third is capped */
    cp_engine_outcome(&f->e, "4AbC1", 5, NULL, 0, CP_OUT_BAD_RECIPIENT, 3000, &d);
    cp_engine_outcome(&f->e, "4AbC1", 5, NULL, 0, CP_OUT_BAD_RECIPIENT, 3000, &d);
    assert_int_equal(d.fired, 0);
    cp_engine_dequeue(&f->e, "4AbC1", 5);
    assert_int_equal(cp_engine_outcome(&f->e, "4AbC1", 5, NULL, 0,
                                       CP_OUT_BAD_RECIPIENT, 3000, &d),
                     0);
    assert_int_equal(f->e.stats.outcomes_unknown, 1);
    /* forgotten after queue_id_ttl (default 5 days) */
    cp_engine_expire(&f->e, 6 * 86400000LL);
    assert_int_equal(cp_engine_queued_count(&f->e), 0);
}

struct journal {
    char add[256];
};

static void
j_add(void *arg, const char *qid, size_t qlen, const char *key, size_t klen,
      int64_t t_ms, unsigned how)
{
    struct journal *j = arg;
    size_t n = strlen(j->add);

    snprintf(j->add + n, sizeof(j->add) - n, "%.*s=%.*s@%lld%s ", (int)qlen,
             qid, (int)klen, key, (long long)t_ms, how ? "/relayed" : "");
}

/* The queue-id journal a checkpoint writes: the ids recorded since the
 * last stored report, oldest first; a failed write (no _stored) repeats
 * them; restored ids are not reported again. */
static void
test_queue_id_journal(void **state)
{
    struct fixture *f = *state;
    struct journal j = {""};
    struct cp_decision d;
    uint64_t mark;

    f->e.q_journal = true;
    queue_msg(f, 0, "a@x", "i1", "Q1");
    queue_from(f, 1000, "b@x", "", "r@y", "i2", "Q2", &d); /* a bounce */
    assert_true(cp_engine_queued_dirty(&f->e));
    mark = cp_engine_queued_journal(&f->e, j_add, &j);
    /* by login: delivery outcomes are evidence for the login that sent */
    assert_string_equal(j.add, "Q1=u:a@x@0 Q2=u:b@x@1000/relayed ");
    cp_engine_queued_stored(&f->e, mark);
    assert_false(cp_engine_queued_dirty(&f->e));
    queue_msg(f, 2000, "a@x", "i3", "Q3");
    queue_msg(f, 3000, "a@x", "i4", "Q4");
    cp_engine_dequeue(&f->e, "Q4", 2); /* forgotten: not journalled */
    memset(&j, 0, sizeof(j));
    mark = cp_engine_queued_journal(&f->e, j_add, &j);
    assert_string_equal(j.add, "Q3=u:a@x@2000 ");
    /* the write failed: the next report repeats it */
    queue_msg(f, 3 * 3600000LL, "a@x", "i5", "Q5"); /* under the cap */
    memset(&j, 0, sizeof(j));
    mark = cp_engine_queued_journal(&f->e, j_add, &j);
    assert_string_equal(j.add, "Q3=u:a@x@2000 Q5=u:a@x@10800000 ");
    cp_engine_queued_stored(&f->e, mark);
    /* restore: kept unless older than queue_id_ttl, not reported again */
    cp_engine_queued_restore(&f->e, "R1", 2, "c:c2", 4, 4 * 3600000LL, 0,
                             5 * 3600000LL);
    cp_engine_queued_restore(&f->e, "R0", 2, "c:c2", 4, 0, 0,
                             6 * 86400000LL);
    assert_int_equal(cp_engine_queued_count(&f->e), 5);
    assert_false(cp_engine_queued_dirty(&f->e));
}

/* Reputation pool: a released account (PROBATION) is answered FILTER with
 * the suspect transport for mail that would be accepted; a deferral stays
 * a deferral; back in NORMAL it is DUNNO again; shadow mode only counts. */
/* A person blocks `login` and releases it: PROBATION (at 2 minutes). */
static void
to_probation(struct fixture *f, const char *login)
{
    struct cp_identity id;
    struct cp_decision d;

    assert_int_equal(cp_identity_lookup(f->cfg, login, strlen(login), &id), 0);
    assert_int_equal(
        cp_engine_set_state(&f->e, &id, CP_ST_MANUAL_HOLD, MIN, &d), 0);
    assert_int_equal(
        cp_engine_set_state(&f->e, &id, CP_ST_PROBATION, 2 * MIN, &d), 0);
    assert_int_equal(d.state, CP_ST_PROBATION);
}

static void
test_suspect_pool(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;

    snprintf(f->cfg->contain.suspect_transport,
             sizeof(f->cfg->contain.suspect_transport), "smtp-suspect:");
    assert_int_equal(ask(f, 0, "RCPT", "a@x", "10.0.0.1", "p1", "r@y", NULL,
                         NULL, NULL),
                     CP_ACT_DUNNO);
    to_probation(f, "a@x");
    ask(f, 60 * MIN, "RCPT", "a@x", "10.0.0.1", "p2", "r@y", NULL, NULL, &d);
    assert_int_equal(d.action, CP_ACT_FILTER);
    assert_string_equal(d.text, "smtp-suspect:");
    assert_string_equal(cp_action_word(d.action), "FILTER");
    /* PROBATION halves the limits (3 messages/h -> 1.5): the next message
     * is over its limit and deferred, not routed */
    ask(f, 61 * MIN, "RCPT", "a@x", "10.0.0.1", "p3", "r@y", NULL, NULL, &d);
    assert_int_equal(d.action, CP_ACT_DEFER);
    /* an account in NORMAL is not routed */
    ask(f, 5 * MIN, "RCPT", "b2@x", "10.0.0.2", "p4", "r@y", NULL, NULL, &d);
    assert_int_equal(d.action, CP_ACT_DUNNO);
    f->cfg->shadow = true;
    ask(f, 6 * 3600000LL, "RCPT", "a@x", "10.0.0.1", "p5", "r@y", NULL, NULL,
        &d);
    assert_int_equal(d.action, CP_ACT_DUNNO);
    assert_int_equal(d.verdict, CP_ACT_FILTER);
    assert_true(f->e.stats.shadow_would[CP_ACT_FILTER] >= 1);
    f->cfg->shadow = false;
}

static void
test_outcome_classification(void **state)
{
    (void)state;
#define OUT(st, dsn) cp_outcome_of(st, strlen(st), dsn, sizeof(dsn) - 1)
    assert_int_equal(OUT("sent", "2.0.0"), CP_OUT_DELIVERED);
    assert_int_equal(OUT("bounced", "5.1.1"), CP_OUT_BAD_RECIPIENT);
    assert_int_equal(OUT("bounced", "5.1.10"), CP_OUT_BAD_RECIPIENT);
    assert_int_equal(OUT("bounced", "5.7.1"), CP_OUT_REJECTED);
    assert_int_equal(OUT("bounced", "5.2.2"), CP_OUT_NONE); /* mailbox full */
    assert_int_equal(OUT("deferred", "4.7.1"), CP_OUT_DEFERRED_POLICY);
    assert_int_equal(OUT("deferred", "4.4.1"), CP_OUT_NONE);
    assert_int_equal(cp_outcome_of("bounced", 7, NULL, 0), CP_OUT_NONE);
#undef OUT
}

static double
level(struct fixture *f, const char *key, unsigned slot, int64_t now)
{
    struct cp_counters c;

    if (!f->ms->base.ops->peek(&f->ms->base, key, strlen(key), &c))
        return -1;
    return cp_meter_level_now(&c, slot, 0, now); /* no leak */
}

static void
test_settle_counts_final_recipients(void **state)
{
    struct fixture *f = *state;

    ask(f, 0, "RCPT", "a@x", "192.0.2.1", "m1", "r1@d", "0", "0", NULL);
    ask(f, 0, "RCPT", "a@x", "192.0.2.1", "m1", "r2@d", "0", "0", NULL);
    ask(f, 0, "RCPT", "a@x", "192.0.2.1", "m1", "r3@d", "0", "0", NULL);
    assert_true(level(f, "c:c1", 1, 0) == 3); /* recipients reserved */
    ask(f, 0, "DATA", "a@x", "192.0.2.1", "m1", "", "2", "0", NULL);
    ask(f, 0, "END-OF-MESSAGE", "a@x", "192.0.2.1", "m1", "", "2", "300",
        NULL);
    assert_true(level(f, "c:c1", 0, 0) == 1); /* messages */
    assert_true(level(f, "c:c1", 1, 0) == 2); /* recipients settled */
    assert_true(level(f, "c:c1", 2, 0) == 300); /* bytes */
    assert_int_equal(cp_engine_pending(&f->e), 0);
}

/* One smtpd's session: a transaction left without END-OF-MESSAGE gives
 * its reservation back at the next transaction, or when the connection
 * ends -- once END-OF-MESSAGE requests are seen to come at all (without
 * them, every transaction would look abandoned and nothing would count). */
static void
test_session_abandons_unfinished_transaction(void **state)
{
    struct fixture *f = *state;
    struct cp_session s;
    struct cp_event ev;
    struct cp_decision d;

    memset(&s, 0, sizeof(s));
    memset(&ev, 0, sizeof(ev));
    ev.stage = CP_STAGE_RCPT;
    ev.sasl_username = str_c("a@x");
    ev.client_address = str_c("192.0.2.1");
    ev.recipient = str_c("r@d");
    ev.instance = str_c("t0");
    cp_session_step(&f->e, &s, &ev, 0);
    cp_engine_decide(&f->e, &ev, 0, &d);
    /* no END-OF-MESSAGE yet on this connection: kept (the timeout) */
    ev.instance = str_c("t1");
    cp_session_step(&f->e, &s, &ev, 0);
    assert_true(fabs(level(f, "c:c1", 0, 0) - 1) < 0.01);
    assert_int_equal(f->e.stats.pending_abandoned, 0);
    cp_engine_decide(&f->e, &ev, 0, &d);
    ev.stage = CP_STAGE_EOM;
    ev.recipient_count = 1;
    cp_session_step(&f->e, &s, &ev, 0);
    cp_engine_decide(&f->e, &ev, 0, &d); /* t1 settled: 2 messages */
    assert_true(s.eom && s.len == 0);
    assert_true(fabs(level(f, "c:c1", 0, 0) - 2) < 0.01);
    /* t2 is left after its RCPT: the next transaction gives it back */
    ev.stage = CP_STAGE_RCPT;
    ev.instance = str_c("t2");
    cp_session_step(&f->e, &s, &ev, 1000);
    cp_engine_decide(&f->e, &ev, 1000, &d);
    assert_true(fabs(level(f, "c:c1", 0, 1000) - 3) < 0.01);
    ev.instance = str_c("t3");
    cp_session_step(&f->e, &s, &ev, 2000);
    assert_true(fabs(level(f, "c:c1", 0, 2000) - 2) < 0.01);
    assert_int_equal(f->e.stats.pending_abandoned, 1);
    /* t3 is in progress when the connection ends */
    cp_engine_decide(&f->e, &ev, 2000, &d);
    cp_session_step(&f->e, &s, NULL, 3000);
    assert_true(fabs(level(f, "c:c1", 0, 3000) - 2) < 0.01);
    assert_int_equal(f->e.stats.pending_abandoned, 2);
    /* t0's reservation was left to the timeout */
    assert_int_equal(cp_engine_pending(&f->e), 1);
}

static void
test_abort_released_after_timeout(void **state)
{
    struct fixture *f = *state;

    ask(f, 0, "RCPT", "a@x", "192.0.2.1", "m1", "r1@d", "0", "100", NULL);
    assert_true(level(f, "c:c1", 0, 0) == 1);
    assert_int_equal(cp_engine_expire(&f->e, 9 * MIN), 0);
    assert_int_equal(cp_engine_expire(&f->e, 10 * MIN), 1);
    assert_true(level(f, "c:c1", 0, 0) == 0);
    assert_true(level(f, "c:c1", 1, 0) == 0);
    assert_true(level(f, "c:c1", 2, 0) == 0);
}

static void
test_shared_customer_limit(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;
    char inst[8];

    for (int i = 0; i < 3; i++) {
        snprintf(inst, sizeof(inst), "m%d", i);
        assert_int_equal(ask(f, 0, "RCPT", i % 2 ? "b@x" : "a@x", "192.0.2.1",
                             inst, "r@d", "0", "0", NULL),
                         CP_ACT_DUNNO);
        ask(f, 0, "END-OF-MESSAGE", "a@x", "192.0.2.1", inst, "", "1", "0",
            NULL);
    }
    assert_int_equal(ask(f, 0, "RCPT", "b@x", "192.0.2.1", "m9", "r@d", "0",
                         "0", &d),
                     CP_ACT_DEFER);
    assert_string_equal(d.rule.name, "messages/1h");
    assert_string_equal(d.id.key, "c:c1");
    /* a structured reply: each protocol formats it for itself */
    assert_int_equal(d.code, 451);
    assert_string_equal(d.status, "4.7.1");
    assert_true(strncmp(d.text, "Sending limit reached", 21) == 0);
    {
        char line[CP_TEXT_MAX];

        assert_true(strncmp(cp_reply_text(&d, line, sizeof(line)),
                            "4.7.1 Sending limit reached", 27) == 0);
    }
    assert_non_null(strstr(d.text, "3 messages per hour"));
    assert_non_null(strstr(d.text, "20 minutes"));
    /* 20 minutes later one message has drained */
    assert_int_equal(ask(f, 20 * MIN, "RCPT", "b@x", "192.0.2.1", "m9", "r@d",
                         "0", "0", NULL),
                     CP_ACT_DUNNO);
}

/* WATCH and PROBATION lower the limits: the reply names the limit applied
 * and a wait that is long enough (it said the full limit and "try again
 * in a moment", the wait computed against the full limit being < 0). */
static void
test_probation_reply_tells_the_applied_limit(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;

    to_probation(f, "a@x");
    assert_int_equal(ask(f, 60 * MIN, "RCPT", "a@x", "10.0.0.1", "p1", "r@y",
                         NULL, NULL, &d),
                     CP_ACT_DUNNO);
    assert_int_equal(ask(f, 61 * MIN, "RCPT", "a@x", "10.0.0.1", "p2", "r@y",
                         NULL, NULL, &d),
                     CP_ACT_DEFER);
    /* 3 messages an hour halved: 1.5, so 1 message; the level (0.975
     * after a minute) must drain to 0.5 at 1.5 an hour: 19 minutes,
     * said rounded up */
    assert_true(d.limit > 1.49 && d.limit < 1.51);
    assert_non_null(strstr(d.text, "may send 1 messages per hour for now "
                                   "(normally 3)"));
    assert_true(d.retry_s > 18 * 60 && d.retry_s < 20 * 60);
    assert_true(strstr(d.text, "try again in 19 minutes") != NULL ||
                strstr(d.text, "try again in 20 minutes") != NULL);
    /* and it is true: a minute early is still deferred, on time is not */
    assert_int_equal(ask(f, 61 * MIN + (int64_t)d.retry_s * 1000 - MIN, "RCPT",
                         "a@x", "10.0.0.1", "p3", "r@y", NULL, NULL, NULL),
                     CP_ACT_DEFER);
    assert_int_equal(ask(f, 61 * MIN + (int64_t)d.retry_s * 1000 + 1000,
                         "RCPT", "a@x", "10.0.0.1", "p4", "r@y", NULL, NULL,
                         NULL),
                     CP_ACT_DUNNO);
}

static void
test_unauthenticated_by_prefix(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;

    ask(f, 0, "RCPT", "", "198.51.100.7", "u1", "r@d", "0", "0", &d);
    assert_string_equal(d.id.key, "ip:198.51.100.0/24");
    ask(f, 0, "RCPT", NULL, "198.51.100.8", "u2", "r@d", "0", "0", &d);
    assert_int_equal(ask(f, 0, "RCPT", NULL, "198.51.100.9", "u3", "r@d", "0",
                         "0", &d),
                     CP_ACT_REJECT);
    assert_int_equal(d.code, 550);
    assert_string_equal(d.status, "5.7.1");
    ask(f, 0, "RCPT", NULL, "2001:db8:1:2:3::4", "u4", "r@d", "0", "0", &d);
    assert_string_equal(d.id.key, "ip:2001:db8:1:2::/64");
    assert_int_equal(cp_engine_decide(&f->e, &(struct cp_event){0}, 0,
                                      &d),
                     -1);
}

static void
test_eom_bytes_limit(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;

    ask(f, 0, "RCPT", "a@x", "192.0.2.1", "m1", "r@d", "0", "0", NULL);
    assert_int_equal(ask(f, 0, "END-OF-MESSAGE", "a@x", "192.0.2.1", "m1", "",
                         "1", "5000", &d),
                     CP_ACT_DEFER);
    assert_string_equal(d.rule.name, "bytes/1h");
    /* the refused message is not counted at all */
    assert_true(level(f, "c:c1", 0, 0) == 0);
    assert_true(level(f, "c:c1", 2, 0) == 0);
}

static void
test_pending_cap(void **state)
{
    struct fixture *f = *state;
    char inst[16], user[16];

    for (int i = 0; i < 40; i++) {
        snprintf(inst, sizeof(inst), "i%d", i);
        snprintf(user, sizeof(user), "u%d@x", i);
        ask(f, 0, "RCPT", user, "192.0.2.1", inst, "r@d", "0", "0", NULL);
    }
    assert_int_equal(cp_engine_pending(&f->e), 16);
    assert_int_equal(f->e.stats.pending_evicted, 24);
    assert_true(level(f, "u:u0@x", 0, 0) == 0); /* evicted → released */
    assert_true(level(f, "u:u39@x", 0, 0) == 1);
}

/* An instance sent again for another account (found by fuzz_daemon_conn:
 * two table entries under one key, then a read past a freed one). */
static void
test_instance_reused_by_another_account(void **state)
{
    struct fixture *f = *state;

    ask(f, 0, "RCPT", "u1@x", "192.0.2.1", "same", "r@d", "0", "0", NULL);
    ask(f, 0, "RCPT", "u2@x", "192.0.2.1", "same", "r@d", "0", "0", NULL);
    assert_int_equal(cp_engine_pending(&f->e), 1);
    assert_true(level(f, "u:u1@x", 0, 0) == 0); /* given back */
    assert_true(level(f, "u:u2@x", 0, 0) == 1);
    /* u1's END-OF-MESSAGE does not settle u2's reservation */
    ask(f, 1000, "END-OF-MESSAGE", "u1@x", "192.0.2.1", "same", "", "1", "10",
        NULL);
    assert_int_equal(cp_engine_pending(&f->e), 1);
    assert_int_equal(cp_engine_expire(&f->e, 11 * MIN), 1);
    assert_int_equal(cp_engine_pending(&f->e), 0);
    assert_true(level(f, "u:u2@x", 0, 0) == 0);
}

static void
test_shadow_mode(void **state)
{
    struct fixture *f = *state;
    struct cp_decision d;
    char inst[8];

    for (int i = 0; i < 5; i++) {
        snprintf(inst, sizeof(inst), "m%d", i);
        assert_int_equal(ask(f, 0, "RCPT", "a@x", "192.0.2.1", inst, "r@d",
                             "0", "0", &d),
                         CP_ACT_DUNNO);
    }
    assert_true(d.shadow);
    assert_int_equal(d.verdict, CP_ACT_DEFER);
    assert_int_equal(f->e.stats.shadow_would[CP_ACT_DEFER], 2);
    assert_true(level(f, "c:c1", 0, 0) == 5); /* everything counted */
    /* settling a would-be-deferred message reports nothing new */
    ask(f, 0, "END-OF-MESSAGE", "a@x", "192.0.2.1", "m4", "", "1", "0", &d);
    assert_false(d.shadow);
    assert_int_equal(d.verdict, CP_ACT_DUNNO);
    assert_int_equal(f->e.stats.shadow_would[CP_ACT_DEFER], 2);
    assert_true(level(f, "c:c1", 0, 0) == 5);
}

/* One transaction script, the decisions it got. */
static void
run_script(struct fixture *f, struct cp_decision *out, size_t n)
{
    static const struct {
        const char *stage, *user, *inst, *rcpt, *count, *size;
    } step[] = {
        {"RCPT", "a@x", "m1", "r1@y", NULL, NULL},
        {"RCPT", "a@x", "m1", "r2@z", NULL, NULL},
        {"END-OF-MESSAGE", "a@x", "m1", NULL, "2", "300"},
        {"RCPT", "b@x", "m2", "r3@y", NULL, NULL},
        {"RCPT", "b@x", "m2", "r4@w", NULL, NULL},
        {"RCPT", "b@x", "m2", "r5@v", NULL, NULL},
        {"RCPT", "b@x", "m2", "r6@u", NULL, NULL}, /* recipients: 6 > 5 */
        {"END-OF-MESSAGE", "b@x", "m2", NULL, "3", "900"}, /* bytes */
        {"RCPT", "u@z", "m3", "r@y", NULL, NULL},
        {"END-OF-MESSAGE", "u@z", "m3", NULL, "1", "10"},
        {"RCPT", "u@z", "m4", "r@y", NULL, NULL},
        {"RCPT", "u@z", "m5", "r@y", NULL, NULL},
        {"RCPT", "u@z", "m6", "r@y", NULL, NULL}, /* messages: 4 > 3 */
        {"RCPT", NULL, "m7", "r@y", NULL, NULL},
    };

    assert_int_equal(n, sizeof(step) / sizeof(step[0]));
    for (size_t i = 0; i < n; i++)
        ask(f, 1000 + (int64_t)i * 1000, step[i].stage, step[i].user,
            "10.0.0.1", step[i].inst, step[i].rcpt, step[i].count,
            step[i].size, &out[i]);
}

/* Fleet mode with Redis unreachable decides as the embedded store does. */
static void
test_two_step_decides_as_one(void **state)
{
    struct fixture *f = *state, *g;
    struct cp_decision one[14], two[14];

    run_script(f, one, 14);
    setup(state);
    g = *state;
    two_step = true;
    run_script(g, two, 14);
    two_step = false;
    for (size_t i = 0; i < 14; i++) {
        assert_int_equal(one[i].action, two[i].action);
        assert_int_equal(one[i].has_rule, two[i].has_rule);
        assert_true(fabs(one[i].value - two[i].value) < 1e-9);
        assert_int_equal(one[i].state, two[i].state);
        assert_string_equal(one[i].text, two[i].text);
    }
    assert_int_equal(one[6].action, CP_ACT_DEFER); /* the script breaches */
    assert_int_equal(one[12].action, CP_ACT_DEFER);
    assert_int_equal(cp_engine_pending(&f->e), cp_engine_pending(&g->e));
    fixture_teardown((void **)&f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_step_decides_as_one, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_ids_and_outcomes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_replies_and_forwards_count_less, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_what_replies_and_forwards_leave, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_id_journal, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_suspect_pool, setup, teardown),
        cmocka_unit_test(test_outcome_classification),
        cmocka_unit_test_setup_teardown(test_settle_counts_final_recipients,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_released_after_timeout,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_probation_reply_tells_the_applied_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_session_abandons_unfinished_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_customer_limit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unauthenticated_by_prefix, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_eom_bytes_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_reused_by_another_account,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_shadow_mode, setup_shadow,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
