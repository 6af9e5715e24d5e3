/*
 * simlog.c — write the simulated traffic as a Postfix mail.log (the lines
 * `chokepoint replay` and `chokepoint learn` read, doc/replay.md) and
 * its ground truth, so that replay is measured on the same traffic as
 * the in-process simulation (sim/replay-efficacy.py).
 *
 * The log is what a Postfix smarthost without chokepoint would write:
 * every message accepted. Per message, at its time: smtpd's connect, the
 * TLS line (smtpd_tls_loglevel = 1) unless plaintext, client= with the
 * SASL login (submission service) or without (smtpd on port 25),
 * cleanup's message-id, qmgr's from=; 2-60 s later one delivery line per
 * recipient (sent 2.0.0, bounced 5.1.1 no such user, bounced 5.7.1
 * refused as spam), a bounce notification when any bounced, and qmgr's
 * removed. Timestamps are RFC 3339 in UTC (Debian 12's rsyslog format),
 * so the log carries its year.
 *
 * The truth file (tab-separated, one record a line): `spam QID ZOMBIE`
 * for every spam message, `zombie INDEX KIND ACCOUNT START END` for every
 * infection (ACCOUNT: the login, or the client address of unauth_relay),
 * `login LOGIN legit|zombie` for every login with mail, and
 * `legit_login_days N`, the denominator of the login-day metric.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/sim.h"
#include "util/xalloc.h"

#define HOST "smtp1"

static void
stamp(char *out, size_t n, int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&s, &tm);
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03d000+00:00",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

void
simlog_qid(char *out, size_t n, uint32_t id, uint8_t attempt)
{
    snprintf(out, n, "%08X%02X", id, attempt);
}

void
simlog_submission(FILE *fp, int64_t t, const struct simlog_msg *m)
{
    const char *svc = m->sasl ? "postfix/submission/smtpd" : "postfix/smtpd";
    unsigned pid = 10000 + m->id % 50000;
    char ts[40], qid[16];

    stamp(ts, sizeof(ts), t);
    simlog_qid(qid, sizeof(qid), m->id, 0);
    fprintf(fp, "%s " HOST " %s[%u]: connect from unknown[%s]\n", ts, svc,
            pid, m->client);
    if (m->tls_proto[0] != '\0')
        fprintf(fp,
                "%s " HOST " %s[%u]: Anonymous TLS connection established "
                "from unknown[%s]: %s with cipher %s (256/256 bits)\n",
                ts, svc, pid, m->client, m->tls_proto, m->tls_cipher);
    if (m->sasl)
        fprintf(fp,
                "%s " HOST " %s[%u]: %s: client=unknown[%s], "
                "sasl_method=PLAIN, sasl_username=%s\n",
                ts, svc, pid, qid, m->client, m->login);
    else
        fprintf(fp, "%s " HOST " %s[%u]: %s: client=unknown[%s]\n", ts, svc,
                pid, qid, m->client);
    fprintf(fp,
            "%s " HOST " postfix/cleanup[%u]: %s: message-id=<%s.%u@sim>\n",
            ts, 60000 + m->id % 1000, qid, qid, m->id);
    fprintf(fp,
            "%s " HOST " postfix/qmgr[999]: %s: from=<%s>, size=%llu, "
            "nrcpt=%u (queue active)\n",
            ts, qid, m->sender, (unsigned long long)m->size, m->nrcpt);
    fprintf(fp, "%s " HOST " %s[%u]: disconnect from unknown[%s]\n", ts, svc,
            pid, m->client);
}

void
simlog_delivery(FILE *fp, int64_t t, uint32_t id, const char *buf,
                size_t len)
{
    char ts[40], qid[16];
    unsigned pid = 70000 + id % 1000;
    bool bounced = false;

    stamp(ts, sizeof(ts), t);
    simlog_qid(qid, sizeof(qid), id, 0);
    for (size_t at = 0; at < len; at += strlen(buf + at + 1) + 2) {
        const char *r = buf + at + 1;
        const char *dom = strchr(r, '@');

        switch ((enum cp_outcome)buf[at]) {
        case CP_OUT_BAD_RECIPIENT:
            fprintf(fp,
                    "%s " HOST " postfix/smtp[%u]: %s: to=<%s>, "
                    "relay=mx.%s[192.0.2.25]:25, delay=2.1, "
                    "delays=0.1/0/1/1, dsn=5.1.1, status=bounced (host "
                    "mx.%s[192.0.2.25] said: 550 5.1.1 <%s>: Recipient "
                    "address rejected: User unknown (in reply to RCPT TO "
                    "command))\n",
                    ts, pid, qid, r, dom ? dom + 1 : "x", dom ? dom + 1 : "x",
                    r);
            bounced = true;
            break;
        case CP_OUT_REJECTED:
            fprintf(fp,
                    "%s " HOST " postfix/smtp[%u]: %s: to=<%s>, "
                    "relay=mx.%s[192.0.2.25]:25, delay=2.1, "
                    "delays=0.1/0/1/1, dsn=5.7.1, status=bounced (host "
                    "mx.%s[192.0.2.25] said: 550 5.7.1 Message rejected as "
                    "spam (in reply to end of DATA command))\n",
                    ts, pid, qid, r, dom ? dom + 1 : "x", dom ? dom + 1 : "x");
            bounced = true;
            break;
        default:
            fprintf(fp,
                    "%s " HOST " postfix/smtp[%u]: %s: to=<%s>, "
                    "relay=mx.%s[192.0.2.25]:25, delay=2.1, "
                    "delays=0.1/0/1/1, dsn=2.0.0, status=sent (250 2.0.0 "
                    "Ok: queued)\n",
                    ts, pid, qid, r, dom ? dom + 1 : "x");
        }
    }
    if (bounced)
        fprintf(fp,
                "%s " HOST " postfix/bounce[%u]: %s: sender non-delivery "
                "notification: B%07X%02X\n",
                ts, 80000 + id % 1000, qid, id & 0xfffffff, 0);
    fprintf(fp, "%s " HOST " postfix/qmgr[999]: %s: removed\n", ts, qid);
}

/* The account a zombie sends through: its login, or (unauth_relay) the
 * client address. */
static void
zombie_account(const struct sim *s, const struct sim_zombie *z, char *out,
               size_t n)
{
    if (s->sc.inf[z->inf].kind == SIM_UNAUTH ||
        !s->sc.cls[s->senders[z->sender].cls].sasl)
        sim_format_ip(out, n, z->ip);
    else
        sim_login(s, out, n, z->sender);
}

void
simlog_truth(FILE *fp, const struct sim *s, const struct sim_metrics *m)
{
    uint8_t *infected = xcalloc(s->nsenders, 1);
    char who[96];

    fprintf(fp, "# chokepoint sim truth\t%s\tseed %u\n", s->sc.file,
            s->sc.seed);
    for (uint32_t i = 0; i < s->nzombies; i++) {
        const struct sim_zombie *z = &s->zombies[i];

        zombie_account(s, z, who, sizeof(who));
        fprintf(fp, "zombie\t%u\t%s\t%s\t%lld\t%lld\n", i,
                sim_kind_name(s->sc.inf[z->inf].kind), who,
                (long long)z->start_ms, (long long)z->end_ms);
        if (s->sc.inf[z->inf].kind != SIM_UNAUTH ||
            !s->sc.cls[s->senders[z->sender].cls].sasl)
            infected[z->sender] = 1;
    }
    for (uint32_t i = 0; i < s->nsenders; i++) {
        if (s->sc.cls[s->senders[i].cls].sasl)
            sim_login(s, who, sizeof(who), i);
        else
            sim_format_ip(who, sizeof(who), s->senders[i].ip);
        fprintf(fp, "login\t%s\t%s\n", who, infected[i] ? "zombie" : "legit");
    }
    fprintf(fp, "legit_login_days\t%llu\n",
            (unsigned long long)m->legit_login_days);
    free(infected);
}
