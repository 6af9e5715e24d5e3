/* test_content.c — content fingerprints (what makes two bodies copies of
 * one text, what is ignored), the campaign table, and what the engine does
 * with a campaign: evidence against the accounts that keep sending it,
 * the message deferred once many do, and chain letters left alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/engine.h"
#include "core/evidence.h"
#include "core/fingerprint.h"
#include "core/lifecycle.h"
#include "engine_fixture.h"
#include "util/rng.h"

/* A text of `words` pseudo-words drawn by `seed`; with `change` of them
 * (a share) replaced by others (personalisation, hash-busting). */
static size_t
text(char *out, size_t cap, uint64_t seed, int words, double change,
     uint64_t change_seed)
{
    static const char *const w[] = {
        "cheap",  "watches", "offer",   "today", "only",   "click", "here",
        "best",   "price",   "limited", "free",  "gift",   "your",  "friend",
        "account", "verify", "now",     "bank",  "secure", "login", "prize",
        "winner", "claim",   "money",   "fast",  "easy",   "work",  "home"};
    struct rng r, c;
    size_t n = 0;

    rng_seed(&r, seed);
    rng_seed(&c, change_seed);
    for (int i = 0; i < words && n + 40 < cap; i++) {
        uint64_t x = rng_next(&r);

        if (rng_unit(&c) < change)
            x = rng_next(&c);
        n += (size_t)snprintf(out + n, cap - n, "%s%llu%s",
                              w[x % (sizeof(w) / sizeof(w[0]))],
                              (unsigned long long)(x >> 40) % 7 == 0 ? 1ULL : 0ULL,
                              i % 12 == 11 ? "\r\n" : " ");
    }
    return n;
}

static int
shared_bands(const struct cp_fp *a, const struct cp_fp *b)
{
    int n = 0;

    for (int j = 0; j < CP_FP_BANDS; j++)
        n += a->band[j] == b->band[j];
    return n;
}

static void
test_near_copies_share_a_band_others_do_not(void **state)
{
    char a[8192], b[8192];
    int copies = 0, strangers = 0;

    (void)state;
    for (uint64_t i = 0; i < 100; i++) {
        struct cp_fp fa, fb, fc;
        size_t na = text(a, sizeof(a), 1000 + i, 150, 0, 0);
        size_t nb = text(b, sizeof(b), 1000 + i, 150, 0.03, 77 + i);

        assert_true(cp_fp_of(a, na, 20, &fa));
        assert_true(cp_fp_of(b, nb, 20, &fb));
        copies += shared_bands(&fa, &fb) > 0;
        nb = text(b, sizeof(b), 5000 + i, 150, 0, 0);
        assert_true(cp_fp_of(b, nb, 20, &fc));
        strangers += shared_bands(&fa, &fc) > 0;
    }
    /* 3 % of the words changed: Jaccard of 3-grams about 0.84 */
    assert_true(copies >= 95);
    assert_int_equal(strangers, 0);
}

static void
test_what_is_ignored(void **state)
{
    static const char body[] =
        "Dear customer, your parcel 48213 could not be delivered today "
        "because the address was incomplete. Please confirm your details "
        "at the link below within 24 hours or it goes back to the sender.";
    char buf[4096];
    struct cp_fp f0, f1;

    (void)state;
    assert_true(cp_fp_of(body, strlen(body), 20, &f0));
    /* case and digits */
    snprintf(buf, sizeof(buf), "%s", body);
    for (char *p = buf; *p; p++) {
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 32);
        else if (*p >= '0' && *p <= '9')
            *p = '7';
    }
    assert_true(cp_fp_of(buf, strlen(buf), 20, &f1));
    assert_memory_equal(f0.band, f1.band, sizeof(f0.band));
    /* a quoted reply, a signature, HTML with a style sheet, MIME parts */
    snprintf(buf, sizeof(buf),
             "> On Monday someone wrote a long message that is quoted\r\n"
             "> here line by line with many words of its own in it\r\n"
             "--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\n"
             "<html><head><style>p { color: red; font-family: arial }"
             "</style></head><body><p class=\"x\">%s</p></body></html>\r\n"
             "--b1--\r\n",
             body);
    assert_true(cp_fp_of(buf, strlen(buf), 20, &f1));
    assert_memory_equal(f0.band, f1.band, sizeof(f0.band));
    /* one stray byte does not hide the rest: a '<' that opens no tag, a
     * "--" line not followed by a blank one (Outlook's quote header) */
    snprintf(buf, sizeof(buf), "a < b\r\n%s", body);
    assert_true(cp_fp_of(buf, strlen(buf), 20, &f1));
    assert_true(f1.words >= 30);
    snprintf(buf, sizeof(buf),
             "-----Original Message-----\r\nFrom: x\r\nSent: y\r\n%s"
             "\r\n%s\r\n%s\r\n%s\r\n%s\r\n%s\r\n%s\r\n%s\r\n%s\r\n%s\r\n%s\r\n",
             "l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8", "l9", "l10", body);
    assert_true(cp_fp_of(buf, strlen(buf), 20, &f1));
    assert_memory_equal(f0.band, f1.band, sizeof(f0.band));
    snprintf(buf, sizeof(buf), "<p %s", body); /* a tag never closed */
    assert_false(cp_fp_of(buf, strlen(buf), 20, &f1)); /* under 2 KiB */
    /* too short to be anything */
    assert_false(cp_fp_of("thanks, see you tomorrow", 24, 20, &f1));
    assert_int_equal(f1.words, 4);
}

static void
test_fed_in_pieces_is_the_same(void **state)
{
    char a[8192];
    size_t n = text(a, sizeof(a), 42, 120, 0, 0);
    struct cp_fp whole, part;

    (void)state;
    assert_true(cp_fp_of(a, n, 20, &whole));
    for (size_t cut = 1; cut < n; cut += 37) {
        struct cp_fp_builder b;

        cp_fp_begin(&b);
        cp_fp_feed(&b, a, cut);
        cp_fp_feed(&b, a + cut, n - cut);
        assert_true(cp_fp_end(&b, 20, &part));
        assert_memory_equal(whole.band, part.band, sizeof(whole.band));
    }
}

static struct cp_fp
fp_of_seed(uint64_t seed)
{
    char a[8192];
    size_t n = text(a, sizeof(a), seed, 100, 0, 0);
    struct cp_fp f;

    assert_true(cp_fp_of(a, n, 20, &f));
    return f;
}

static void
test_campaign_table(void **state)
{
    struct cp_campaigns c;
    struct cp_camp_info ci;
    struct cp_fp spam = fp_of_seed(7), other = fp_of_seed(8);

    (void)state;
    cp_campaigns_init(&c, 1024, 3600, 3, 5, 0.03);
    /* one copy each from many accounts (replies quoting one newsletter
     * would be that): nobody counts */
    for (uint32_t a = 1; a <= 20; a++)
        cp_campaigns_add(&c, &spam, a * 0x9e3779b9u, 1000, &ci);
    assert_int_equal(ci.accounts, 0);
    assert_int_equal(ci.copies, 1);
    /* accounts 1..4 send it again: each counts from its third copy */
    for (int k = 0; k < 2; k++)
        for (uint32_t a = 1; a <= 4; a++)
            cp_campaigns_add(&c, &spam, a * 0x9e3779b9u, 1010, &ci);
    assert_int_equal(ci.copies, 3);
    assert_int_equal(ci.accounts, 4);
    assert_false(ci.spam);
    /* another text is another entry */
    cp_campaigns_add(&c, &other, 1 * 0x9e3779b9u, 1020, &ci);
    assert_int_equal(ci.accounts, 0);
    /* outcomes: a low refusal share (a chain letter to friends) is not
     * spam, however many copies */
    for (int i = 0; i < 1000; i++)
        cp_campaigns_outcome(&c, &spam, i % 100 == 0);
    cp_campaigns_add(&c, &spam, 1 * 0x9e3779b9u, 1030, &ci);
    assert_false(ci.spam);
    /* a harvested list: 10 % bounce */
    for (int i = 0; i < 200; i++)
        cp_campaigns_outcome(&c, &spam, i % 5 == 0);
    cp_campaigns_add(&c, &spam, 1 * 0x9e3779b9u, 1040, &ci);
    assert_true(ci.spam);
    assert_int_equal(ci.accounts, 4);
    /* quiet for longer than the window: forgotten */
    cp_campaigns_add(&c, &spam, 1 * 0x9e3779b9u, 1040 + 3601, &ci);
    assert_false(ci.spam);
    assert_int_equal(ci.accounts, 0);
    assert_int_equal(ci.copies, 1);
    cp_campaigns_fini(&c);
}

/* Fleet mode: two hosts' tables, each told what the other saw (as
 * campaign.lua sums them: the sketches ORed, the outcomes added). */
static void
test_campaign_merge(void **state)
{
    struct cp_campaigns a, b;
    struct cp_camp_info ci;
    struct cp_fp spam = fp_of_seed(7), other = fp_of_seed(8);
    uint64_t sk = 0;

    (void)state;
    cp_campaigns_init(&a, 1024, 3600, 1, 5, 0.2);
    cp_campaigns_init(&b, 1024, 3600, 1, 5, 0.2);
    for (uint32_t k = 1; k <= 3; k++) { /* three senders on host b */
        cp_campaigns_add(&b, &spam, k * 0x9e3779b9u, 1000, &ci);
        assert_int_not_equal(ci.bit, 0);
        sk |= ci.bit;
    }
    assert_int_equal(ci.accounts, 3);
    cp_campaigns_add(&a, &spam, 9 * 0x9e3779b9u, 1000, &ci);
    assert_int_equal(ci.accounts, 1);
    sk |= ci.bit;
    /* a band a has not seen is not taken */
    assert_false(cp_campaigns_merge(&a, other.band[0], sk, 0, 0, 0, 0, 1001));
    for (int j = 0; j < CP_FP_BANDS; j++)
        assert_true(cp_campaigns_merge(&a, spam.band[j], sk, 10, 4, 0, 0, 1001));
    cp_campaigns_add(&a, &spam, 9 * 0x9e3779b9u, 1002, &ci);
    assert_int_equal(ci.accounts, 4);
    assert_false(ci.spam); /* 4 refused of 10: below min_bad */
    /* the fleet's outcomes are the larger: a's own first */
    for (int i = 0; i < 12; i++)
        cp_campaigns_outcome(&a, &spam, i < 2);
    for (int j = 0; j < CP_FP_BANDS; j++)
        assert_true(cp_campaigns_merge(&a, spam.band[j], 0, 20, 6, 0, 0, 1003));
    cp_campaigns_add(&a, &spam, 9 * 0x9e3779b9u, 1004, &ci);
    assert_true(ci.spam); /* 6 refused of 22 */
    /* nonsense (more refused than sent) changes no outcome */
    assert_true(cp_campaigns_merge(&b, spam.band[0], 0, 1, 9, 0, 0, 1005));
    cp_campaigns_add(&b, &spam, 1 * 0x9e3779b9u, 1006, &ci);
    assert_false(ci.spam);
    /* copies over the fleet: an account counts from its second copy
     * (repeat 2); its first here, its first on another host: two */
    {
        struct cp_campaigns r2;

        cp_campaigns_init(&r2, 1024, 3600, 2, 5, 0.2);
        cp_campaigns_add(&r2, &other, 5 * 0x9e3779b9u, 1000, &ci);
        assert_int_equal(ci.accounts, 0);
        for (int j = 0; j < CP_FP_BANDS; j++)
            assert_true(cp_campaigns_merge(&r2, other.band[j], 0, 0, 0,
                                           5 * 0x9e3779b9u, 2, 1001));
        cp_campaigns_add(&r2, &other, 5 * 0x9e3779b9u, 1002, &ci);
        assert_int_equal(ci.copies, 3);
        assert_int_equal(ci.accounts, 1);
        cp_campaigns_fini(&r2);
    }
    /* quiet for the window: the band is gone, nothing merges into it */
    assert_false(cp_campaigns_merge(&a, spam.band[0], sk, 0, 0, 0, 0, 1004 + 3601));
    cp_campaigns_fini(&a);
    cp_campaigns_fini(&b);
}

/* ---- the engine ---- */

static const char yaml[] =
    "daemon:\n"
    "  listen: [unix:/tmp/x.sock]\n"
    "classes:\n"
    "  residential:\n"
    "    limits:\n"
    "      - { metric: messages, window: 1h, max: 1000 }\n"
    "  unauthenticated:\n"
    "    limits:\n"
    "      - { metric: messages, window: 1h, max: 2 }\n"
    "content:\n"
    "  campaign_accounts: 3\n"
    "  refuse_accounts: 5\n"
    "  min_bad: 5\n"
    "  bad_share: 0.03\n";

static int
setup(void **state)
{
    *state = fixture_new(yaml);
    return 0;
}

static int
teardown(void **state)
{
    return fixture_teardown(state);
}

/* One message of account `login` from `sender` to one recipient, queued
 * as `qid` (the policy service's END-OF-MESSAGE records it), then its
 * content. */
static void
send_from(struct fixture *f, const char *login, const char *sender,
          const char *qid, const struct cp_fp *fp, int64_t t,
          struct cp_decision *d)
{
    struct cp_event r;
    struct cp_decision eom;

    memset(&r, 0, sizeof(r));
    r.stage = CP_STAGE_EOM;
    r.sasl_username = str_c(login);
    r.sender = str_c(sender);
    r.client_address = str_c("192.0.2.9");
    r.queue_id = str_c(qid);
    r.recipient_count = 1;
    r.size = 2000;
    assert_int_equal(cp_engine_decide(&f->e, &r, t, &eom), 0);
    r.stage = CP_STAGE_CONTENT;
    assert_int_equal(cp_engine_content(&f->e, &r, fp, t, d), 0);
}

/* A message forwarded by mail server `login` to its user's mailbox
 * `box`, with the original sender `sender`: RCPT, END-OF-MESSAGE with
 * queue id `qid`, then its content; `delivered`: the next hop accepted
 * it (the mail log). */
static void
forward_text(struct fixture *f, const char *login, const char *sender,
             const char *box, const char *qid, const struct cp_fp *fp,
             bool delivered, int64_t t, struct cp_decision *d)
{
    struct cp_event r;
    struct cp_decision o;

    memset(&r, 0, sizeof(r));
    r.stage = CP_STAGE_RCPT;
    r.sasl_username = str_c(login);
    r.sender = str_c(sender);
    r.recipient = str_c(box);
    r.client_address = str_c("192.0.2.9");
    r.instance = str_c(qid);
    assert_int_equal(cp_engine_decide(&f->e, &r, t, &o), 0);
    r.stage = CP_STAGE_EOM;
    r.recipient = str_c(NULL);
    r.queue_id = str_c(qid);
    r.recipient_count = 1;
    r.size = 2000;
    assert_int_equal(cp_engine_decide(&f->e, &r, t, &o), 0);
    r.stage = CP_STAGE_CONTENT;
    assert_int_equal(cp_engine_content(&f->e, &r, fp, t, d), 0);
    cp_engine_outcome(&f->e, qid, strlen(qid), box, strlen(box),
                      delivered ? CP_OUT_DELIVERED : CP_OUT_REJECTED, t + 10,
                      &o);
}

/* Five companies' mail servers forward one spam run their users
 * received to the users' mailboxes, which refuse it: once the mailbox
 * is where the server's forwards go, the text is another's, no copy of
 * the server's campaign. (The first forward to a new mailbox counts.) */
static void
test_forwards_of_a_spam_run_are_no_campaign(void **state)
{
    struct cp_fp spam = fp_of_seed(14), ham = fp_of_seed(15);
    struct fixture *f = *state;
    struct cp_decision d;
    char login[32], box[48], qid[32], from[48];
    int64_t t = 1800000000000LL;
    int seq = 0;

    for (int a = 0; a < 5; a++) { /* each forwarded mail before */
        snprintf(login, sizeof(login), "mx%d@isp.example", a);
        snprintf(box, sizeof(box), "user%d@mailbox.example", a);
        snprintf(qid, sizeof(qid), "F%d", seq++);
        forward_text(f, login, "friend@elsewhere.example", box, qid, &ham,
                     true, t += 1000, &d);
    }
    assert_int_equal(f->e.stats.content, 5);
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 5; a++) {
            snprintf(login, sizeof(login), "mx%d@isp.example", a);
            snprintf(box, sizeof(box), "user%d@mailbox.example", a);
            snprintf(from, sizeof(from), "s%d.%d@spam.example", k, a);
            snprintf(qid, sizeof(qid), "F%d", seq++);
            forward_text(f, login, from, box, qid, &spam, false, t += 1000,
                         &d);
            assert_false(d.fired & (1u << CP_SIG_CAMPAIGN));
        }
    assert_int_equal(f->e.stats.content, 5); /* none of the forwards */
    assert_int_equal(d.action, CP_ACT_DUNNO);
}

/* The login's own message. */
static void
send_text(struct fixture *f, const char *login, const char *qid,
          const struct cp_fp *fp, int64_t t, struct cp_decision *d)
{
    send_from(f, login, login, qid, fp, t, d);
}

/* Mail servers of five companies bounce one spam run they received to
 * its forged senders (the null sender, one recipient, the spam's text
 * in the bounce), and the bounces bounce: another's text, no campaign.
 * The same text sent as themselves is one (test_engine_campaign). */
static void
test_bounces_of_a_spam_run_are_no_campaign(void **state)
{
    struct fixture *f = *state;
    struct cp_fp spam = fp_of_seed(13);
    struct cp_decision d;
    char login[32], qid[32];
    int64_t t = 1800000000000LL;
    int seq = 0;

    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 5; a++) {
            snprintf(login, sizeof(login), "mx%d@isp.example", a);
            snprintf(qid, sizeof(qid), "B%d", seq++);
            send_from(f, login, "", qid, &spam, t += 1000, &d);
        }
    for (int i = 0; i < seq; i++) {
        struct cp_decision o;

        snprintf(qid, sizeof(qid), "B%d", i);
        cp_engine_outcome(&f->e, qid, strlen(qid), NULL, 0,
                          CP_OUT_BAD_RECIPIENT, t += 10, &o);
    }
    send_from(f, "mx0@isp.example", "", "B100", &spam, t += 1000, &d);
    assert_false(d.fired & (1u << CP_SIG_CAMPAIGN));
    assert_int_equal(d.action, CP_ACT_DUNNO);
    assert_int_equal(d.value, 0);
    assert_int_equal(f->e.stats.content, 0);
    /* the milter's message whose queue id the policy service never saw:
     * its null sender says it */
    {
        struct cp_event r;

        memset(&r, 0, sizeof(r));
        r.stage = CP_STAGE_CONTENT;
        r.sasl_username = str_c("mx1@isp.example");
        r.sender = str_c("");
        r.queue_id = str_c("UNSEEN");
        assert_int_equal(cp_engine_content(&f->e, &r, &spam, t, &d), 0);
        assert_int_equal(f->e.stats.content, 0);
    }
}

static void
test_engine_campaign(void **state)
{
    struct fixture *f = *state;
    struct cp_fp spam = fp_of_seed(11);
    struct cp_decision d;
    char login[32], qid[32];
    int64_t t = 1800000000000LL;
    int seq = 0;

    /* four accounts send the text three times each; nothing yet said it
     * is spam (no delivery outcomes): no evidence, nothing refused */
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 4; a++) {
            snprintf(login, sizeof(login), "z%d@isp.example", a);
            snprintf(qid, sizeof(qid), "Q%d", seq++);
            send_text(f, login, qid, &spam, t += 1000, &d);
            assert_int_equal(d.action, CP_ACT_DUNNO);
            assert_false(d.fired & (1u << CP_SIG_CAMPAIGN));
        }
    assert_true(d.value >= 4);
    /* its copies bounce: the next-hop outcomes make it spam */
    for (int i = 0; i < seq; i++) {
        char q[32];
        struct cp_decision o;

        snprintf(q, sizeof(q), "Q%d", i);
        cp_engine_outcome(&f->e, q, strlen(q), NULL, 0,
                          i % 2 ? CP_OUT_BAD_RECIPIENT : CP_OUT_DELIVERED,
                          t += 10, &o);
    }
    send_text(f, "z0@isp.example", "Q100", &spam, t += 1000, &d);
    assert_true(d.fired & (1u << CP_SIG_CAMPAIGN));
    assert_int_equal(d.action, CP_ACT_DUNNO); /* 4 accounts < refuse 5 */
    /* z0 keeps sending it: throttled by the campaign evidence */
    for (int i = 0; i < 5 && d.state != CP_ST_THROTTLED; i++) {
        snprintf(qid, sizeof(qid), "Q%d", 101 + i);
        send_text(f, "z0@isp.example", qid, &spam, t += 1000, &d);
    }
    assert_int_equal(d.state, CP_ST_THROTTLED);
    assert_int_equal(d.action, CP_ACT_DEFER);
    /* a fifth account joins: now every copy is deferred, even a first
     * one from an account that is clean */
    for (int k = 0; k < 3; k++) {
        snprintf(qid, sizeof(qid), "Q%d", 200 + k);
        send_text(f, "z4@isp.example", qid, &spam, t += 1000, &d);
    }
    send_text(f, "fresh@isp.example", "Q300", &spam, t += 1000, &d);
    assert_int_equal(d.action, CP_ACT_DEFER);
    assert_string_equal(d.status, "4.7.1");
    assert_non_null(strstr(d.text, "spam run"));
    assert_int_equal(d.state, CP_ST_NORMAL);
    /* campaign evidence alone never blocks: z0 stays THROTTLED however
     * many copies it sends */
    for (int i = 0; i < 40; i++) {
        snprintf(qid, sizeof(qid), "Q%d", 400 + i);
        send_text(f, "z0@isp.example", qid, &spam, t += 1000, &d);
    }
    assert_int_equal(d.state, CP_ST_THROTTLED);
    /* another text from `fresh`: nothing to say about it */
    {
        struct cp_fp ham = fp_of_seed(12);

        send_text(f, "fresh@isp.example", "Q500", &ham, t += 1000, &d);
        assert_int_equal(d.action, CP_ACT_DUNNO);
        assert_int_equal(d.value, 0);
    }
    assert_int_equal(f->e.stats.identity_errors, 0);
}

/* Content alone never blocks: campaign evidence is not one of the two
 * signals a block needs, however much of it there is. */
static void
test_campaign_is_no_corroboration(void **state)
{
    struct cp_detection det;
    struct cp_evidence ev;
    struct cp_ev_input in;
    uint32_t fired;
    char rcpt[64];

    (void)state;
    memset(&det, 0, sizeof(det));
    det.half_life_ms = 6 * 3600000LL;
    det.floor = -5;
    det.watch_at = 4;
    det.weight[CP_SIG_CAMPAIGN] = 3.0;
    det.weight[CP_SIG_NEW_RECIPIENT] = 0.1;
    memset(&ev, 0, sizeof(ev));
    ev.rcpt_n = 50; /* an owner who mostly writes to people it knows */
    ev.rcpt_new = 5;
    for (int i = 0; i < 20; i++) {
        memset(&in, 0, sizeof(in));
        in.now_ms = 1800000000000LL + i * 1000;
        in.new_message = true;
        snprintf(rcpt, sizeof(rcpt), "stranger%d@example.net", i);
        in.recipient = str_c(rcpt);
        cp_evidence_rcpt(&ev, &det, &in, &fired);
        cp_evidence_content(&ev, &det, true, in.now_ms, &fired);
        assert_true(fired & (1u << CP_SIG_CAMPAIGN));
    }
    assert_true(ev.sig[CP_SIG_CAMPAIGN] > 50);
    assert_true(ev.sig[CP_SIG_NEW_RECIPIENT] >= 1);
    assert_int_equal(cp_evidence_corroboration(&ev), 1);
    assert_int_not_equal(cp_lifecycle_step(&(struct cp_detection){
                             .watch_at = 4, .throttle_at = 8, .block_at = 15,
                             .half_life_ms = 6 * 3600000LL},
                             CP_ST_THROTTLED, 0, 0, ev.score,
                             cp_evidence_corroboration(&ev), 1800000020000LL),
                         CP_ST_BLOCKED);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_near_copies_share_a_band_others_do_not),
        cmocka_unit_test(test_what_is_ignored),
        cmocka_unit_test(test_fed_in_pieces_is_the_same),
        cmocka_unit_test(test_campaign_table),
        cmocka_unit_test(test_campaign_merge),
        cmocka_unit_test(test_campaign_is_no_corroboration),
        cmocka_unit_test_setup_teardown(
            test_bounces_of_a_spam_run_are_no_campaign, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_forwards_of_a_spam_run_are_no_campaign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_campaign, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
