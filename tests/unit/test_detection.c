/* test_detection.c — evidence signals, the fading score, and the account
 * lifecycle: what moves an account between states and what never does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/evidence.h"
#include "core/lifecycle.h"
#include "util/hmap.h"

#define MIN 60000LL
#define HOUR 3600000LL

static struct cp_detection det;

static int
setup(void **state)
{
    static const double w[CP_SIG_COUNT] = {1.0, -0.5, 0.1, -0.2, 0.5, 2.0};

    (void)state;
    memset(&det, 0, sizeof(det));
    det.enabled = true;
    det.half_life_ms = 6 * HOUR;
    det.floor = -5;
    det.watch_at = 4;
    det.throttle_at = 8;
    det.block_at = 15;
    det.watch_factor = 0.5;
    det.probation_ms = 7 * 24 * HOUR;
    det.networks = 4;
    det.rate_factor = 4;
    memcpy(det.weight, w, sizeof(w));
    return 0;
}

/* One message's input: `login` (NULL: none) from `ip` (NULL: none). */
static void
msg_input(struct cp_ev_input *in, struct inet_addr *a, int64_t t,
          const char *login, const char *from, const char *rcpt,
          const char *ip)
{
    memset(in, 0, sizeof(*in));
    in->now_ms = t;
    in->new_message = true;
    in->sasl = login != NULL;
    in->login = str_c(login);
    in->sender = str_c(from);
    in->recipient = str_c(rcpt);
    if (ip && inet_parse(ip, strlen(ip), a))
        in->client = a;
}

static double
send(struct cp_evidence *ev, int64_t t, const char *login, const char *from,
     const char *rcpt, const char *ip, uint32_t *fired)
{
    struct cp_ev_input in;
    struct inet_addr a;
    uint32_t f;

    msg_input(&in, &a, t, login, from, rcpt, ip);
    return cp_evidence_rcpt(ev, &det, &in, fired ? fired : &f);
}

/* A message from ann, as herself, to her mother. */
static void
ann_input(struct cp_ev_input *in, int64_t t)
{
    memset(in, 0, sizeof(*in));
    in->now_ms = t;
    in->new_message = true;
    in->sasl = true;
    in->login = str_c("ann@isp.example");
    in->sender = str_c("ann@isp.example");
    in->recipient = str_c("mum@home.example");
}

static uint32_t
send_helo(struct cp_evidence *ev, int64_t t, const char *helo,
          const char *rcpt)
{
    struct cp_ev_input in;
    uint32_t f;

    ann_input(&in, t);
    in.recipient = str_c(rcpt);
    in.helo = str_c(helo);
    cp_evidence_rcpt(ev, &det, &in, &f);
    return f;
}

static void
test_helo_signals(void **state)
{
    struct cp_evidence ev;
    uint32_t f;

    (void)state;
    det.weight[CP_SIG_HELO_NEW] = 0.5;
    det.weight[CP_SIG_HELO_FORGED] = 2.0;
    memset(&ev, 0, sizeof(ev));
    /* a new account: nothing is unusual yet */
    f = send_helo(&ev, 0, "DESKTOP-7H2K9LQ", "mum@home.example");
    assert_false(f & (1u << CP_SIG_HELO_NEW));
    for (int i = 1; i < 6; i++)
        send_helo(&ev, i * MIN, "DESKTOP-7H2K9LQ", "mum@home.example");
    /* the phone: address literals, a new one on every network, are one */
    for (int i = 0; i < 3; i++) {
        char lit[32];

        snprintf(lit, sizeof(lit), "[10.%d.0.%d]", i, i + 1);
        f = send_helo(&ev, (10 + i) * MIN, lit, "mum@home.example");
    }
    f = send_helo(&ev, 20 * MIN, "[172.16.9.9]", "mum@home.example");
    assert_false(f & (1u << CP_SIG_HELO_NEW));
    f = send_helo(&ev, 21 * MIN, "DESKTOP-7H2K9LQ", "mum@home.example");
    assert_false(f & (1u << CP_SIG_HELO_NEW));
    /* spamware makes a name up */
    f = send_helo(&ev, 22 * MIN, "qzkxwv", "v1@free.example");
    assert_true(f & (1u << CP_SIG_HELO_NEW));
    /* or claims to be the recipient's own host */
    f = send_helo(&ev, 23 * MIN, "FREE.example", "v2@free.example");
    assert_true(f & (1u << CP_SIG_HELO_FORGED));
    assert_false(f & (1u << CP_SIG_HELO_NEW));
}

static uint32_t
send_tls(struct cp_evidence *ev, int64_t t, const char *proto,
         const char *cipher)
{
    struct cp_ev_input in;
    uint32_t f;

    ann_input(&in, t);
    in.tls_protocol = str_c(proto);
    in.tls_cipher = str_c(cipher);
    cp_evidence_rcpt(ev, &det, &in, &f);
    return f;
}

/* tls_new: the PC's and the phone's stacks are learned; a plaintext
 * session or another stack is new; nothing fires before a regular stack. */
static void
test_tls_signal(void **state)
{
    struct cp_evidence ev;
    const uint32_t bit = 1u << CP_SIG_TLS_NEW;

    (void)state;
    det.weight[CP_SIG_TLS_NEW] = 0.5;
    memset(&ev, 0, sizeof(ev));
    assert_false(send_tls(&ev, 0, NULL, NULL) & bit); /* nothing learned */
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 4; i++)
        assert_false(send_tls(&ev, i * MIN, "TLSv1.3",
                              "TLS_AES_256_GCM_SHA384") & bit);
    /* the phone: new the first time, learned from then on */
    assert_true(send_tls(&ev, 10 * MIN, "TLSv1.3",
                         "TLS_CHACHA20_POLY1305_SHA256") & bit);
    assert_false(send_tls(&ev, 11 * MIN, "TLSv1.3",
                          "TLS_CHACHA20_POLY1305_SHA256") & bit);
    assert_false(send_tls(&ev, 12 * MIN, "TLSv1.3",
                          "TLS_CHACHA20_POLY1305_SHA256") & bit);
    assert_false(send_tls(&ev, 13 * MIN, "tlsv1.3",
                          "TLS_AES_256_GCM_SHA384") & bit);
    /* a bot's SMTP engine: plaintext, or an old stack */
    assert_true(send_tls(&ev, 20 * MIN, NULL, NULL) & bit);
    assert_true(send_tls(&ev, 21 * MIN, "TLSv1", "AES128-SHA") & bit);
    assert_int_equal(ev.fired[CP_SIG_TLS_NEW], 3);
}

static double
eom(struct cp_evidence *ev, int64_t t, uint64_t size, uint32_t *fired)
{
    return cp_evidence_eom(ev, &det, size, t, fired);
}

/* One message of `size` from ann, as herself, to `rcpt`; the bits of
 * the RCPT and END-OF-MESSAGE evidence. */
static uint32_t
ann_sends(struct cp_evidence *ev, int64_t t, const char *rcpt, uint64_t size)
{
    struct cp_ev_input in;
    uint32_t f1, f2;

    ann_input(&in, t);
    in.recipient = str_c(rcpt);
    cp_evidence_rcpt(ev, &det, &in, &f1);
    eom(ev, t, size, &f2);
    return f1 | f2;
}

/* uniform_size: one template for hours to many recipients fires once an
 * hour from the third hour, and suspends the owned_sender credit; a
 * report to one address, a two-hour mail merge and varied mail never. */
static void
test_uniform_size(void **state)
{
    const uint32_t u = 1u << CP_SIG_UNIFORM_SIZE, o = 1u << CP_SIG_OWNED_SENDER;
    struct cp_evidence ev;
    char rcpt[64];
    uint32_t f;
    int fires = 0, credits_after = 0;

    (void)state;
    det.weight[CP_SIG_UNIFORM_SIZE] = 3.0;
    /* the nightly report, one size, one address, every 5 minutes for 8 h */
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 96; i++)
        assert_false(ann_sends(&ev, i * 5 * MIN, "ops@isp.example", 4096) & u);
    /* a mail merge: 300 recipients, one template, within two hours */
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 300; i++) {
        snprintf(rcpt, sizeof(rcpt), "guest%d@example.org", i);
        assert_false(ann_sends(&ev, i * 24000LL, rcpt, 6000 + (i * 37) % 100) &
                     u);
    }
    /* people's mail: sizes all over the place, for a day */
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 288; i++) {
        snprintf(rcpt, sizeof(rcpt), "friend%d@example.org", i);
        assert_false(ann_sends(&ev, i * 5 * MIN, rcpt,
                               2000 + (uint64_t)(i * 7919) % 90000) & u);
    }
    eom(&ev, 300 * 5 * MIN, 0, &f); /* size unknown: no evidence */
    assert_int_equal(f, 0);
    /* the bot in ann's mail client: a dozen an hour, one template, a new
     * address each, and ann's own mail (another size) now and then */
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 72; i++) {
        int64_t t = i * 5 * MIN;

        snprintf(rcpt, sizeof(rcpt), "victim%d@example.net", i);
        f = ann_sends(&ev, t, rcpt, i % 10 == 9 ? 45000 : 6000 + i % 50);
        if (f & u) {
            assert_true(t >= 3 * HOUR);
            fires++;
        }
        if (fires > 0 && !(f & u))
            credits_after += (f & o) != 0;
    }
    assert_int_equal(fires, 3); /* hours 3, 4 and 5 */
    assert_int_equal(credits_after, 0);
    /* the same template again after a pause of an hour: not steady, so
     * the first message back is no evidence (a lone message that happens
     * to have the size of a run that ended never is) */
    assert_false(ann_sends(&ev, 7 * HOUR, "late@example.net", 6010) & u);
    assert_true(ann_sends(&ev, 7 * HOUR + 5 * MIN, "later@example.net",
                          6020) & u);
    /* mostly other sizes from now on: the run ends */
    for (int i = 0; i < 20; i++)
        ann_sends(&ev, 8 * HOUR + i * MIN, "mum@home.example",
                  10000 + (uint64_t)i * 5000);
    assert_true(ev.size_n < CP_EV_RUN_MSGS);
}

/* Mail the account's state refuses is retried to the same recipients:
 * "known" then earns no credit; the other signals count as ever. */
static void
test_refused_mail_earns_no_known_credit(void **state)
{
    struct cp_evidence ev;
    struct cp_ev_input in;
    uint32_t f;

    (void)state;
    memset(&ev, 0, sizeof(ev));
    ann_input(&in, 0);
    in.recipient = str_c("x1@victims.example");
    cp_evidence_rcpt(&ev, &det, &in, &f);
    assert_true(f & (1u << CP_SIG_NEW_RECIPIENT));
    in.now_ms = 10 * MIN; /* deferred; tried again */
    in.refused = true;
    cp_evidence_rcpt(&ev, &det, &in, &f);
    assert_false(f & (1u << CP_SIG_KNOWN_RECIPIENT));
    assert_int_equal(ev.fired[CP_SIG_KNOWN_RECIPIENT], 0);
    in.refused = false; /* accepted now: it counts */
    in.now_ms = 20 * MIN;
    cp_evidence_rcpt(&ev, &det, &in, &f);
    assert_true(f & (1u << CP_SIG_KNOWN_RECIPIENT));
}

/* Stored evidence reads back as it was; anything else is refused. */
static void
test_evidence_pack(void **state)
{
    struct cp_evidence ev, back;
    unsigned char buf[CP_EV_PACKED];
    float nan = NAN;
    uint32_t f;

    (void)state;
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 5; i++)
        send(&ev, i * MIN, "ann@isp.example", "x@forged.example",
             "v@victims.example", "192.0.2.1", &f);
    cp_evidence_pack(&ev, buf);
    assert_true(cp_evidence_unpack(&back, buf, sizeof(buf)));
    assert_memory_equal(&ev, &back, sizeof(ev));
    assert_false(cp_evidence_unpack(&back, buf, sizeof(buf) - 1));
    buf[4] ^= 1; /* another format */
    assert_false(cp_evidence_unpack(&back, buf, sizeof(buf)));
    buf[4] ^= 1;
    buf[0] = 'X';
    assert_false(cp_evidence_unpack(&back, buf, sizeof(buf)));
    buf[0] = 'C';
    memcpy(buf + 8 + offsetof(struct cp_evidence, score), &nan, sizeof(nan));
    assert_false(cp_evidence_unpack(&back, buf, sizeof(buf)));
}

static void
test_odd_hour(void **state)
{
    struct cp_evidence ev;
    uint32_t f = 0;

    (void)state;
    det.weight[CP_SIG_ODD_HOUR] = 0.3;
    memset(&ev, 0, sizeof(ev));
    /* office hours, three days: nothing odd, even the first 3 a.m. */
    for (int d = 0; d < 3; d++)
        for (int h = 9; h < 19; h++) {
            send(&ev, d * 24 * HOUR + h * HOUR, "ann@isp.example",
                 "ann@isp.example", "mum@home.example", NULL, &f);
            assert_false(f & (1u << CP_SIG_ODD_HOUR));
        }
    send(&ev, 3 * 24 * HOUR + 10 * HOUR, "ann@isp.example",
         "ann@isp.example", "mum@home.example", NULL, &f);
    assert_false(f & (1u << CP_SIG_ODD_HOUR));
    send(&ev, 4 * 24 * HOUR + 3 * HOUR + 5 * MIN, "ann@isp.example",
         "ann@isp.example", "mum@home.example", NULL, &f);
    assert_true(f & (1u << CP_SIG_ODD_HOUR));
    /* the hour is one fact: its other messages add nothing */
    send(&ev, 4 * 24 * HOUR + 3 * HOUR + 40 * MIN, "ann@isp.example",
         "ann@isp.example", "mum@home.example", NULL, &f);
    assert_false(f & (1u << CP_SIG_ODD_HOUR));
    send(&ev, 4 * 24 * HOUR + 4 * HOUR + 1 * MIN, "ann@isp.example",
         "ann@isp.example", "mum@home.example", NULL, &f);
    assert_true(f & (1u << CP_SIG_ODD_HOUR));
    assert_int_equal(ev.fired[CP_SIG_ODD_HOUR], 2);
    /* a bounce or an automatic reply (the null sender) goes when the mail
     * it answers came: its hour is learned, never odd */
    send(&ev, 5 * 24 * HOUR + 1 * HOUR, "ann@isp.example", "",
         "someone@else.example", NULL, &f);
    assert_false(f & (1u << CP_SIG_ODD_HOUR));
    send(&ev, 6 * 24 * HOUR + 1 * HOUR + 5 * MIN, "ann@isp.example",
         "ann@isp.example", "mum@home.example", NULL, &f);
    assert_false(f & (1u << CP_SIG_ODD_HOUR));
    assert_int_equal(ev.fired[CP_SIG_ODD_HOUR], 2);
}

static void
test_owner_mail_lowers_score(void **state)
{
    struct cp_evidence ev;
    uint32_t fired;
    double s = 0;

    (void)state;
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 30; i++)
        s = send(&ev, i * MIN, "ann@isp.example", "ann@isp.example",
                 i % 2 ? "mum@mail.example" : "bob@mail.example", "10.0.0.1",
                 &fired);
    assert_true(s <= -4.9); /* floored */
    assert_true(fired & (1u << CP_SIG_OWNED_SENDER));
    assert_true(fired & (1u << CP_SIG_KNOWN_RECIPIENT));
}

static void
test_zombie_corroborated_within_ten_messages(void **state)
{
    struct cp_evidence ev;
    char rcpt[64], from[64];
    double s = 0;
    int i;

    (void)state;
    memset(&ev, 0, sizeof(ev));
    for (i = 0; i < 10 && s < det.block_at; i++) {
        snprintf(rcpt, sizeof(rcpt), "victim%d@freemail.example", i);
        snprintf(from, sizeof(from), "x%d@forged.example", i);
        s = send(&ev, i * 1000, "ann@isp.example", from, rcpt, "10.0.0.1",
                 NULL);
        /* the other recipients of the same message */
        for (int r = 0; r < 8; r++) {
            struct cp_ev_input in;
            uint32_t f;

            memset(&in, 0, sizeof(in));
            in.now_ms = i * 1000;
            in.sasl = true;
            in.login = str_c("ann@isp.example");
            snprintf(rcpt, sizeof(rcpt), "v%d.%d@freemail.example", i, r);
            in.recipient = str_c(rcpt);
            s = cp_evidence_rcpt(&ev, &det, &in, &f);
        }
    }
    assert_true(s >= det.throttle_at);
    assert_true(cp_evidence_corroboration(&ev) >= 2);
}

/* One spam message of the zombie above (forged sender, nine new
 * recipients) at second i. */
static double
zombie_message(struct cp_evidence *ev, int i)
{
    char rcpt[64], from[64];
    double s;

    snprintf(rcpt, sizeof(rcpt), "victim%d@freemail.example", i);
    snprintf(from, sizeof(from), "x%d@forged.example", i);
    s = send(ev, i * 1000, "ann@isp.example", from, rcpt, "10.0.0.1", NULL);
    for (int r = 0; r < 8; r++) {
        struct cp_ev_input in;
        uint32_t f;

        memset(&in, 0, sizeof(in));
        in.now_ms = i * 1000;
        in.sasl = true;
        in.login = str_c("ann@isp.example");
        snprintf(rcpt, sizeof(rcpt), "v%d.%d@freemail.example", i, r);
        in.recipient = str_c(rcpt);
        s = cp_evidence_rcpt(ev, &det, &in, &f);
    }
    return s;
}

/*
 * Fleet mode: a zombie's messages spread over two hosts. Each host's gains
 * (mark before an update, gained after), summed as Redis sums them, give
 * each host back the score one host alone would have: not half of it.
 */
static void
test_fleet_sum_of_gains(void **state)
{
    struct cp_evidence one, host[2];
    struct cp_ev_delta sum, gain, mark;
    struct cp_ev_shared sh;
    double s1 = 0;

    (void)state;
    memset(&one, 0, sizeof(one));
    memset(host, 0, sizeof(host));
    memset(&sum, 0, sizeof(sum));
    for (int i = 0; i < 8; i++) {
        struct cp_evidence *ev = &host[i % 2];

        s1 = zombie_message(&one, i);
        cp_evidence_mark(ev, &mark);
        zombie_message(ev, i);
        memset(&gain, 0, sizeof(gain));
        assert_true(cp_evidence_gained(&mark, ev, &det, &gain));
        cp_ev_delta_add(&sum, &gain, &det);
    }
    /* each host alone has about half the score */
    assert_true(host[0].score < 0.7 * s1);
    memset(&sh, 0, sizeof(sh));
    sh.t_ms = sum.t_ms;
    for (int i = 0; i < CP_SIG_COUNT; i++) {
        sh.sig[i] = sum.sig[i];
        sh.score += sum.sig[i];
        sh.fired[i] = sum.fired[i];
        sh.last_s[i] = sum.last_s[i];
    }
    cp_evidence_adopt(&host[0], &det, &sh, NULL, 7000);
    /* within 10 %: the habits a signal's weight depends on (the share of
     * new recipients learned) are each host's own */
    assert_float_equal(host[0].score, s1, 0.1 * s1);
    assert_int_equal(host[0].fired[CP_SIG_FORGED_SENDER],
                     one.fired[CP_SIG_FORGED_SENDER]);
    assert_true(cp_evidence_corroboration(&host[0]) >= 2);
    /* what was gained here and not told yet is kept on top */
    memset(&gain, 0, sizeof(gain));
    gain.t_ms = 7000;
    gain.sig[CP_SIG_NETWORKS] = 2;
    gain.fired[CP_SIG_NETWORKS] = 1;
    cp_evidence_adopt(&host[1], &det, &sh, &gain, 7000);
    assert_float_equal(host[1].score, s1 + 2, 0.1 * s1);
    /* a gain fades like the evidence: half after a half-life */
    memset(&mark, 0, sizeof(mark));
    mark.t_ms = 6 * HOUR + 7000;
    cp_ev_delta_add(&gain, &mark, &det);
    assert_float_equal(gain.sig[CP_SIG_NETWORKS], 1.0, 1e-4);
    assert_true(cp_ev_delta_news(&gain, 1.0, 2.0));
    assert_false(cp_ev_delta_news(&gain, 1.5, 2.0));
    gain.sig[CP_SIG_OWNED_SENDER] = -2.5;
    assert_false(cp_ev_delta_news(&gain, 1.5, 2.0));
    assert_true(cp_ev_delta_news(&gain, 1.5, 1.0));
    /* the fleet's sum an hour later: faded, and never under the floor */
    sh.score = -50;
    cp_evidence_adopt(&host[1], &det, &sh, NULL, HOUR);
    assert_float_equal(host[1].score, det.floor, 1e-6);
}

/*
 * Fleet mode: habits learned on two hosts, merged. A sender used once on
 * each host is learned (two hosts: two uses), where a merge of counts
 * alone (the larger) would not; merging again changes nothing; the
 * recipients either host mailed are known to both.
 */
static void
test_fleet_habits_merge(void **state)
{
    struct cp_evidence a, b, before;
    struct cp_ev_input in;
    struct inet_addr ad;
    uint32_t f;
    uint8_t bit[2] = {1, 2};
    struct cp_evidence *host[2] = {&a, &b};

    (void)state;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    /* ann's own address on both hosts, a while (so a sender habit) */
    for (int i = 0; i < 6; i++) {
        msg_input(&in, &ad, i * MIN, "ann@isp.example", "ann@isp.example",
                  "mum@home.example", "10.0.0.1");
        in.host_bit = bit[i % 2];
        cp_evidence_rcpt(host[i % 2], &det, &in, &f);
    }
    /* her other address, once on each host: forged both times */
    for (int i = 0; i < 2; i++) {
        msg_input(&in, &ad, (10 + i) * MIN, "ann@isp.example",
                  "ann.home@freemail.example", "bob@work.example",
                  "10.0.0.1");
        in.host_bit = bit[i];
        cp_evidence_rcpt(host[i], &det, &in, &f);
        assert_true(f & (1u << CP_SIG_FORGED_SENDER));
    }
    cp_evidence_merge_habits(&a, &b);
    before = a;
    cp_evidence_merge_habits(&a, &b);
    assert_memory_equal(&a, &before, sizeof(a));
    /* bob, mailed on b only, is known on a */
    for (int i = 0; i < CP_EV_BLOOM; i++)
        assert_int_equal(a.bloom[i] & b.bloom[i], b.bloom[i]);
    /* the third use, on either host, is hers */
    msg_input(&in, &ad, 20 * MIN, "ann@isp.example",
              "ann.home@freemail.example", "carl@work.example", "10.0.0.1");
    in.host_bit = 1;
    cp_evidence_rcpt(&a, &det, &in, &f);
    assert_false(f & (1u << CP_SIG_FORGED_SENDER));
    assert_true(f & (1u << CP_SIG_OWNED_SENDER));
    /* the same on one host with a count-only merge: still forged */
    memset(b.owned_h, 0, sizeof(b.owned_h));
    for (int i = 0; i < CP_EV_OWNED; i++)
        b.owned_h[i] = b.owned_n[i] ? 1 : 0;
    msg_input(&in, &ad, 21 * MIN, "ann@isp.example",
              "ann.home@freemail.example", "dora@work.example", "10.0.0.1");
    in.host_bit = 1;
    cp_evidence_rcpt(&b, &det, &in, &f);
    assert_true(f & (1u << CP_SIG_FORGED_SENDER));
}

/* A record of format 3 (before the hosts of habits) is read: the same
 * evidence, each remembered entry this host's. */
static void
test_evidence_format3_read(void **state)
{
    struct cp_evidence ev, back;
    unsigned char buf[CP_EV_PACKED];
    uint16_t fmt = 3, size = 528;
    char from[64];

    (void)state;
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 5; i++) {
        snprintf(from, sizeof(from), "x%d@isp.example", i % 2);
        send(&ev, i * MIN, "ann@isp.example", from, "mum@home.example",
             "10.0.0.1", NULL);
    }
    cp_evidence_pack(&ev, buf);
    memcpy(buf + 4, &fmt, 2);
    memcpy(buf + 6, &size, 2);
    assert_false(cp_evidence_unpack(&back, buf, CP_EV_PACKED));
    assert_true(cp_evidence_unpack(&back, buf, 8 + 528));
    assert_memory_equal(&back, &ev, 528);
    for (int i = 0; i < CP_EV_OWNED; i++)
        assert_int_equal(back.owned_h[i], back.owned_n[i] ? 1 : 0);
}

static void
test_alias_is_learned(void **state)
{
    struct cp_evidence ev;
    uint32_t fired = 0;

    (void)state;
    memset(&ev, 0, sizeof(ev));
    send(&ev, 0, "ann@isp.example", "ann.family@home.example", "a@x.example",
         "10.0.0.1", &fired);
    assert_true(fired & (1u << CP_SIG_FORGED_SENDER));
    send(&ev, MIN, "ann@isp.example", "ann.family@home.example",
         "a@x.example", "10.0.0.1", &fired);
    send(&ev, 2 * MIN, "ann@isp.example", "ann.family@home.example",
         "a@x.example", "10.0.0.1", &fired);
    assert_true(fired & (1u << CP_SIG_OWNED_SENDER));
}

static void
test_address_keyed_account_learns_its_sender(void **state)
{
    struct cp_evidence ev;
    uint32_t fired = 0;
    char from[32];

    (void)state;
    memset(&ev, 0, sizeof(ev));
    /* a static-IP business: unknown at first, never "forged" */
    for (int i = 0; i < 5; i++) {
        send(&ev, i * MIN, NULL, "office@shop.example", "c@x.example",
             "192.0.2.7", &fired);
        assert_false(fired & (1u << CP_SIG_FORGED_SENDER));
    }
    assert_true(fired & (1u << CP_SIG_OWNED_SENDER));
    /* a trojan behind another address: every message a new sender */
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 6; i++) {
        snprintf(from, sizeof(from), "x%d@forged.example", i);
        send(&ev, i * MIN, NULL, from, "c@x.example", "192.0.2.8", &fired);
    }
    assert_true(fired & (1u << CP_SIG_FORGED_SENDER));
}

static void
test_networks_and_decay(void **state)
{
    struct cp_evidence ev;
    uint32_t fired = 0;
    /* four unrelated networks (/16s) within the hour */
    const char *nets[] = {"10.1.0.1", "10.2.1.1", "10.3.2.1", "10.4.3.1"};
    double s;

    (void)state;
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < 4; i++)
        send(&ev, i * MIN, "ann@isp.example", "ann@isp.example",
             "a@x.example", nets[i], &fired);
    assert_true(fired & (1u << CP_SIG_NETWORKS));
    s = cp_evidence_score(&ev, &det, 3 * MIN);
    /* one half-life later, half the score */
    assert_true(fabs(cp_evidence_score(&ev, &det, 3 * MIN + 6 * HOUR) - s / 2) <
                1e-3);
}

/* One message of `login` from `ip`, as `from`, with the customer's
 * record `shared` and customer `cust` (either NULL). */
static uint32_t
send_as(struct cp_evidence *ev, int64_t t, const char *login,
        const char *from, const char *ip, struct cp_evidence *shared,
        const struct cp_customer *cust)
{
    struct cp_ev_input in;
    struct inet_addr a;
    uint32_t f;

    msg_input(&in, &a, t, login, from, "friend@other.example", ip);
    assert_non_null(in.client);
    in.shared = shared;
    in.cust = cust;
    cp_evidence_rcpt(ev, &det, &in, &f);
    return f;
}

/* A shared office login: its people send as themselves at the login's
 * domain (colleagues: no evidence, no credit), at the company's other
 * domain with a colleague's local part, and at the customer's domains
 * (the map's domains=: owned); what one login of a customer learns, its
 * colleagues' logins own too. */
static void
test_colleagues_and_customer_domains(void **state)
{
    const uint32_t forged = 1u << CP_SIG_FORGED_SENDER,
                   own = 1u << CP_SIG_OWNED_SENDER;
    struct cp_evidence ev, other, shared;
    struct cp_customer cust;
    uint32_t f;

    (void)state;
    memset(&ev, 0, sizeof(ev));
    f = send_as(&ev, 0, "office@acme.example", "anna@acme.example",
                "192.0.2.10", NULL, NULL);
    assert_false(f & (forged | own));
    f = send_as(&ev, MIN, "office@acme.example", "anna@acme-shop.example",
                "192.0.2.10", NULL, NULL);
    assert_false(f & forged); /* anna: a colleague's local part */
    f = send_as(&ev, 2 * MIN, "office@acme.example", "x77@acme-shop.example",
                "192.0.2.10", NULL, NULL);
    assert_true(f & forged);  /* nobody's */
    f = send_as(&ev, 3 * MIN, "office@acme.example", "bot@free.example",
                "192.0.2.10", NULL, NULL);
    assert_true(f & forged);
    /* the map names the customer's domains: any address there is owned */
    memset(&ev, 0, sizeof(ev));
    memset(&cust, 0, sizeof(cust));
    cust.domain[cust.ndomains++] = hmap_hash_lower("acme-shop.example", 17);
    f = send_as(&ev, 0, "office@acme.example", "x77@ACME-shop.example",
                "192.0.2.10", NULL, &cust);
    assert_true(f & own);
    /* an alias one login learns is owned by the customer's other logins */
    memset(&ev, 0, sizeof(ev));
    memset(&other, 0, sizeof(other));
    memset(&shared, 0, sizeof(shared));
    for (int i = 0; i < 2; i++)
        send_as(&ev, i * MIN, "anna@acme.example", "sales@acme.example",
                "192.0.2.10", &shared, NULL);
    f = send_as(&other, 3 * MIN, "bob@isp.example", "sales@acme.example",
                "192.0.2.10", &shared, NULL);
    assert_true(f & own);
    f = send_as(&other, 4 * MIN, "bob@isp.example", "sales@acme.example",
                "192.0.2.10", NULL, NULL);
    assert_false(f & own); /* not without the customer's record */
}

/* networks: a login's own places (office, home line, a phone's carrier)
 * are learned; a shared login's people at their homes within the hour are
 * expected; stolen credentials used from one unrelated network after
 * another are not. */
static void
test_networks_learned(void **state)
{
    const uint32_t bit = 1u << CP_SIG_NETWORKS;
    static const char *const own[] = {"185.0.0.10", "81.3.7.10",
                                      "100.81.4.9", "100.81.200.1"};
    struct cp_evidence ev;
    char ip[32], from[64];
    uint32_t f = 0;

    (void)state;
    det.weight[CP_SIG_NETWORKS] = 2.0;
    memset(&ev, 0, sizeof(ev));
    /* two days of a person's habits: office, home, the phone (a carrier's
     * pool: another address, the same network, every time) */
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 12; i++)
            f |= send_as(&ev, d * 24 * HOUR + i * 5 * MIN, "anna@acme.example",
                         "anna@acme.example", own[i % 4], NULL, NULL);
    assert_false(f & bit);
    f = 0;
    for (int i = 0; i < 8; i++) { /* all four within ten minutes */
        f |= send_as(&ev, 3 * 24 * HOUR + i * MIN, "anna@acme.example",
                     "anna@acme.example", own[i % 4], NULL, NULL);
    }
    assert_false(f & bit);
    /* then someone else, from unrelated networks */
    for (int i = 0; i < 6; i++) {
        snprintf(ip, sizeof(ip), "203.%d.7.1", 10 + i);
        f |= send_as(&ev, 3 * 24 * HOUR + (10 + i) * MIN, "anna@acme.example",
                     "anna@acme.example", ip, NULL, NULL);
    }
    assert_true(f & bit);
    assert_int_equal(ev.fired[CP_SIG_NETWORKS], 3); /* the 4th, 5th, 6th */
    /* while spread, her address earns no credit from an unrelated network
     * (the thief sends as her), but does from her own */
    {
        uint16_t credit = ev.fired[CP_SIG_OWNED_SENDER];

        send_as(&ev, 3 * 24 * HOUR + 20 * MIN, "anna@acme.example",
                "anna@acme.example", "203.40.7.1", NULL, NULL);
        assert_int_equal(ev.fired[CP_SIG_OWNED_SENDER], credit);
        send_as(&ev, 3 * 24 * HOUR + 21 * MIN, "anna@acme.example",
                "anna@acme.example", own[0], NULL, NULL);
        assert_int_equal(ev.fired[CP_SIG_OWNED_SENDER], credit + 1);
    }
    /* a shared login on its first day: six people, each at home */
    memset(&ev, 0, sizeof(ev));
    f = 0;
    for (int i = 0; i < 6; i++) {
        snprintf(ip, sizeof(ip), "81.%d.7.1", 10 + i);
        snprintf(from, sizeof(from), "p%d@acme.example", i);
        f |= send_as(&ev, i * MIN, "office@acme.example", from, ip, NULL,
                     NULL);
    }
    assert_false(f & bit);
}

/* A new account (fewer than detection.learning messages learned) is
 * throttled on any evidence, blocked only on the receivers' word. */
static void
test_learning_period(void **state)
{
    struct cp_evidence ev;

    (void)state;
    det.learning = 50;
    memset(&ev, 0, sizeof(ev));
    ev.sig[CP_SIG_FORGED_SENDER] = 9;
    ev.sig[CP_SIG_NEW_RECIPIENT] = 6;
    assert_int_equal(cp_evidence_corroboration(&ev), 2);
    assert_int_equal(cp_evidence_block_signals(&ev, &det), 1);
    ev.sig[CP_SIG_BAD_RECIPIENT] = 4;
    assert_int_equal(cp_evidence_block_signals(&ev, &det), 3);
    ev.sig[CP_SIG_BAD_RECIPIENT] = 0;
    ev.msgs_learned = 50; /* its habits are known */
    assert_int_equal(cp_evidence_block_signals(&ev, &det), 2);
    det.learning = 0;
}

/* A message's delivery evidence is its net, within -0.25 and +2: a newsletter's
 * batch of 50 with two stale addresses is credit, whatever the order its
 * outcomes arrive in; a harvested list's message is evidence. */
static void
test_delivery_evidence_is_net_per_message(void **state)
{
    struct cp_evidence ev;
    uint32_t f;
    float msg;

    (void)state;
    det.weight[CP_SIG_BAD_RECIPIENT] = 2.0;
    det.weight[CP_SIG_DELIVERED] = -0.25;
    for (int order = 0; order < 2; order++) {
        memset(&ev, 0, sizeof(ev));
        msg = 0;
        for (int i = 0; i < 50; i++) {
            bool bad = order ? i < 2 : i >= 48; /* bounces first or last */

            cp_evidence_outcome(&ev, &det,
                                bad ? CP_SIG_BAD_RECIPIENT : CP_SIG_DELIVERED,
                                1, &msg, 1000, &f);
        }
        assert_true(fabs(ev.score - -0.25) < 1e-4);
    }
    memset(&ev, 0, sizeof(ev));
    msg = 0;
    for (int i = 0; i < 8; i++)
        cp_evidence_outcome(&ev, &det,
                            i % 3 == 0 ? CP_SIG_BAD_RECIPIENT : CP_SIG_DELIVERED,
                            1, &msg, 1000, &f);
    assert_true(fabs(ev.score - 2.0) < 1e-4);
}

/* New recipients weigh by the owner's own share of new ones: nothing for
 * an account still meeting its address book, full weight for one that
 * writes to people it knows. */
static void
test_new_recipients_against_the_owners_share(void **state)
{
    struct cp_evidence fresh, settled;
    char rcpt[64];
    float f0, s0;

    (void)state;
    memset(&fresh, 0, sizeof(fresh));
    memset(&settled, 0, sizeof(settled));
    for (int i = 0; i < 60; i++) { /* everyone new: a shared login's day */
        snprintf(rcpt, sizeof(rcpt), "n%d@x.example", i);
        send(&fresh, i * MIN, "office@acme.example", "office@acme.example",
             rcpt, "192.0.2.1", NULL);
    }
    for (int i = 0; i < 60; i++) /* one known friend, again and again */
        send(&settled, i * MIN, "ann@isp.example", "ann@isp.example",
             "mum@home.example", "192.0.2.1", NULL);
    f0 = fresh.sig[CP_SIG_NEW_RECIPIENT];
    s0 = settled.sig[CP_SIG_NEW_RECIPIENT];
    send(&fresh, 60 * MIN, "office@acme.example", "office@acme.example",
         "stranger@x.example", "192.0.2.1", NULL);
    send(&settled, 60 * MIN, "ann@isp.example", "ann@isp.example",
         "stranger@x.example", "192.0.2.1", NULL);
    assert_true(fresh.sig[CP_SIG_NEW_RECIPIENT] - f0 < 0.01);
    assert_true(settled.sig[CP_SIG_NEW_RECIPIENT] - s0 > 0.09);
}

static void
test_lifecycle(void **state)
{
    (void)state;
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_NORMAL, 0, 0, 3, 2, 0),
                     CP_ST_NORMAL);
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_NORMAL, 0, 0, 5, 2, 0),
                     CP_ST_WATCH);
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_WATCH, 0, 0, 9, 2, 0),
                     CP_ST_THROTTLED);
    /* one signal alone never blocks, however strong */
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_THROTTLED, 0, 0, 50, 1, 0),
                     CP_ST_THROTTLED);
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_THROTTLED, 0, 0, 15, 2, 0),
                     CP_ST_BLOCKED);
    /* a repeat offender is blocked on less */
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_THROTTLED, 2, 0, 11, 2, 0),
                     CP_ST_BLOCKED);
    /* blocks are left only by a person */
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_BLOCKED, 0, 0, -5, 0, 0),
                     CP_ST_BLOCKED);
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_MANUAL_HOLD, 0, 0, 0, 0, 0),
                     CP_ST_MANUAL_HOLD);
    /* hysteresis: THROTTLED needs the score under watch_at to step down */
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_THROTTLED, 0, 0, 5, 2, 0),
                     CP_ST_THROTTLED);
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_THROTTLED, 0, 0, 3, 2, 0),
                     CP_ST_WATCH);
    /* WATCH becomes NORMAL only after a quiet hour */
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_WATCH, 0, 0, 1, 0, HOUR / 2),
                     CP_ST_WATCH);
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_WATCH, 0, 0, 1, 0, HOUR),
                     CP_ST_NORMAL);
    /* PROBATION: half the thresholds, then NORMAL after the period */
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_PROBATION, 1, 0, 4.5, 2, 0),
                     CP_ST_THROTTLED);
    assert_int_equal(cp_lifecycle_step(&det, CP_ST_PROBATION, 1, 0, 0, 0,
                                       (int64_t)det.probation_ms),
                     CP_ST_NORMAL);
    assert_int_equal(cp_state_parse("BLOCKED"), CP_ST_BLOCKED);
    assert_int_equal(cp_state_parse("blocked"), -1);
}

/* The explanation's signals add up to the score, or it says why not:
 * good mail pushed the score to its floor, and what came after counted
 * from there. */
static void
test_explain_adds_up(void **state)
{
    struct cp_evidence ev;
    char out[400];

    (void)state;
    memset(&ev, 0, sizeof(ev));
    ev.t_ms = 1000;
    ev.sig[CP_SIG_OWNED_SENDER] = -27.5f;
    ev.fired[CP_SIG_OWNED_SENDER] = 20;
    ev.sig[CP_SIG_FORGED_SENDER] = 11.0f;
    ev.fired[CP_SIG_FORGED_SENDER] = 11;
    ev.score = (float)(det.floor + 11.0);
    cp_evidence_explain(&ev, &det, 1000, out, sizeof(out));
    assert_non_null(strstr(out, "score 6.0: "));
    assert_non_null(strstr(out, " (not below -5.0: good mail counts at most "
                                "that)"));
    /* no floor reached: nothing to add */
    ev.score = (float)(-27.5 + 11.0);
    cp_evidence_explain(&ev, &det, 1000, out, sizeof(out));
    assert_null(strstr(out, "not below"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_owner_mail_lowers_score, setup),
        cmocka_unit_test_setup(test_helo_signals, setup),
        cmocka_unit_test_setup(test_odd_hour, setup),
        cmocka_unit_test_setup(test_tls_signal, setup),
        cmocka_unit_test_setup(test_uniform_size, setup),
        cmocka_unit_test_setup(test_refused_mail_earns_no_known_credit, setup),
        cmocka_unit_test_setup(test_evidence_pack, setup),
        cmocka_unit_test_setup(test_zombie_corroborated_within_ten_messages,
                               setup),
        cmocka_unit_test_setup(test_alias_is_learned, setup),
        cmocka_unit_test_setup(test_address_keyed_account_learns_its_sender,
                               setup),
        cmocka_unit_test_setup(test_networks_and_decay, setup),
        cmocka_unit_test_setup(test_colleagues_and_customer_domains, setup),
        cmocka_unit_test_setup(test_networks_learned, setup),
        cmocka_unit_test_setup(test_learning_period, setup),
        cmocka_unit_test_setup(test_delivery_evidence_is_net_per_message,
                               setup),
        cmocka_unit_test_setup(test_new_recipients_against_the_owners_share,
                               setup),
        cmocka_unit_test_setup(test_lifecycle, setup),
        cmocka_unit_test_setup(test_fleet_sum_of_gains, setup),
        cmocka_unit_test_setup(test_fleet_habits_merge, setup),
        cmocka_unit_test_setup(test_evidence_format3_read, setup),
        cmocka_unit_test_setup(test_explain_adds_up, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
