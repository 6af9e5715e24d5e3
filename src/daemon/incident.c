/*
 * incident.c — what the daemon does with a decision, in one place: every
 * notable decision goes to the log and the decision log; an account's
 * state change (the engine says so in the decision, it never calls out)
 * is made durable before the reply, in one SQLite transaction with the
 * jobs of its incident (notices, webhooks, holding or releasing the
 * account's queued mail), and explained in the log.
 *
 * Called by every front end after the engine: the policy connection
 * (conn.c), the milter (milter.c), the mail-log follower (logfollow.c),
 * DNSBL answers (dnsbl.c) and a person's decision (admin.c, which passes
 * who and why). Thread: the loop thread.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/evidence.h"
#include "core/explain.h"
#include "core/lifecycle.h"
#include "core/notice.h"
#include "daemon/daemon.h"
#include "daemon/fleet.h"
#include "util/msg.h"
#include "util/strbuf.h"

void
incident_open_log(struct daemon *d)
{
    if (d->decision_log) {
        fclose(d->decision_log);
        d->decision_log = NULL;
    }
    if (d->cfg->decision_log == NULL)
        return;
    d->decision_log = fopen(d->cfg->decision_log, "a");
    if (d->decision_log == NULL)
        msg_error("decision_log %s: %s; JSON lines go to the main log",
                  d->cfg->decision_log, strerror(errno));
}

void
daemon_log_decision(struct daemon *d, const struct cp_decision *dec,
                    const struct cp_event *ev, int64_t incident,
                    int64_t now_ms)
{
    bool notable = dec->action != CP_ACT_DUNNO || dec->shadow ||
                   dec->state_changed;
    struct strbuf sb;

    /* whatever the log level: show lists what it was seen with */
    if (notable || dec->score > 0 || dec->state != CP_ST_NORMAL)
        seen_note(d->seen, dec->id.dkey, dec->id.dkeylen, ev, now_ms);
    if (!notable && !msg_enabled(MSG_DEBUG))
        return;
    if (notable)
        recent_add(d->recent, dec, now_ms);
    if (dec->by_state && !dec->state_changed &&
        !ratelog_allow(&d->refusal_log))
        return;
    sb_init(&sb);
    cp_explain_text(&sb, dec, ev, incident > 0 ? (uint64_t)incident : 0);
    if (notable)
        msg_info("%s", sb.data);
    else
        msg_debug("%s", sb.data);
    sb_reset(&sb);
    cp_explain_json(&sb, dec, ev, incident > 0 ? (uint64_t)incident : 0,
                    now_ms);
    if (d->decision_log) {
        sb_append(&sb, "\n", 1);
        fwrite(sb.data, 1, sb.len, d->decision_log);
        fflush(d->decision_log);
    } else if (notable) {
        msg_info("decision %s", sb.data);
    }
    sb_fini(&sb);
}

static bool
is_blocked(int st)
{
    return st == CP_ST_BLOCKED || st == CP_ST_MANUAL_HOLD;
}

static void
add_qid(void *arg, const char *qid, size_t len)
{
    struct strbuf *sb = arg;

    sb_append(sb, qid, len);
    sb_append(sb, "\n", 1);
}

/*
 * Retroactive hold: the account's mail still in the Postfix queue (queue
 * ids recorded at END-OF-MESSAGE) is put on hold when it is blocked and
 * released when it is released (containment.hold_command /
 * release_command, queue ids on stdin, run by the outbox thread).
 */
static void
contain(struct daemon *d, const struct cp_decision *dec, const char *key,
        bool hold, uint64_t incident)
{
    const char *cmd = hold ? d->cfg->contain.hold_command
                           : d->cfg->contain.release_command;
    struct strbuf ids;
    size_t n;

    if (cmd[0] == '\0')
        return;
    sb_init(&ids);
    n = cp_engine_queued(&d->engine, dec->id.dkey, dec->id.dkeylen, add_qid,
                         &ids);
    if (n > 0) {
        msg_info("account %s: %s %zu queued messages (incident %llu)", key,
                 hold ? "holding" : "releasing", n,
                 (unsigned long long)incident);
        outbox_command(d->outbox, d->cfg, hold ? "hold" : "release", cmd, key,
                       incident, ids.data, ids.len);
    }
    sb_fini(&ids);
}

static const char *
req_field(struct str s, char *buf, size_t n)
{
    if (s.p == NULL || s.len == 0)
        return NULL;
    snprintf(buf, n, "%.*s", (int)s.len, s.p);
    return buf;
}

/* The signals behind an automatic block, strongest first: those that
 * raised the score (a signal that speaks for the account never explains a
 * block). */
static void
incident_signals(struct cp_incident *in, const struct cp_evidence *ev)
{
    uint8_t order[CP_SIG_COUNT];
    size_t n = cp_signals_ranked(ev->sig, ev->fired, order);

    for (size_t k = 0; k < n; k++)
        if (ev->sig[order[k]] > 0)
            in->signals[in->nsignals++] = order[k];
}

/*
 * A release refers to the block it ends: the incident number its notices
 * quote is the block's (in->change is the release's own), and its
 * customer hears of it only if they heard of the block (not after a
 * --no-notify block, a shadow one, or one whose notice never went). Both
 * come from the store, so they survive a restart. A block the history
 * does not hold (older than it, or not recorded): the release's own
 * number, and no notice. Returns whether the customer was told.
 */
static bool
release_of(struct daemon *d, const struct cp_decision *dec, const char *key,
           struct cp_incident *in)
{
    int64_t block = 0;
    bool told = false;

    if (cp_sqlite_last_block(d->db_sync, dec->id.dkey, dec->id.dkeylen, key,
                             (int64_t)in->change, &block, &told) < 0)
        msg_error("account %s: the block this release ends cannot be read "
                  "from the store",
                  key);
    if (block > 0)
        in->id = (uint64_t)block;
    if (!told)
        msg_info("account %s: no release notice: the customer was not told "
                 "of the block (incident %llu)",
                 key, (unsigned long long)in->id);
    return told;
}

/*
 * An incident: an account has just been blocked, or released. Tell the
 * customer (unless --no-notify, or of a release of a block they were not
 * told of), and, for a block, the abuse desk; the ticket system always
 * (per notify:). `by`: the person who decided (NULL: the evidence did);
 * `rec`: the account's evidence, or NULL. `reason` is the internal note
 * (or the evidence line); only by->tell reaches the customer. A
 * customer's own record (c:) names the customer's logins.
 */
static void
notify(struct daemon *d, const struct cp_decision *dec,
       const struct cp_event *ev, const char *key,
       const struct incident_by *by, const struct cp_evidence *rec,
       const char *reason, uint64_t incident, int64_t now_ms)
{
    char client[64], helo[256], sender[256], rcpt[256];
    const struct cp_customer *cu = dec->id.cust;
    struct cp_incident in;
    bool customer = !(by != NULL && by->quiet);

    memset(&in, 0, sizeof(in));
    in.id = incident;
    in.change = incident;
    in.account = key;
    in.customer = cu ? cu->id : NULL;
    in.contact = cu ? cu->contact : NULL;
    if (cu != NULL && dec->id.dkeylen > 2 &&
        memcmp(dec->id.dkey, "c:", 2) == 0) {
        in.logins = cu->logins;
        in.nlogins = cu->nlogins;
    }
    in.state = cp_state_name((enum cp_state)dec->state);
    in.prev_state = cp_state_name((enum cp_state)dec->prev_state);
    in.released = !is_blocked(dec->state);
    in.at_ms = now_ms;
    in.score = dec->score;
    in.evidence = by ? "" : reason;
    in.reason = by ? reason : "automatic";
    in.actor = by ? by->who : "auto";
    in.message = by && by->tell && by->tell[0] ? by->tell : NULL;
    if (by == NULL && rec != NULL)
        incident_signals(&in, rec);
    in.help_url = d->cfg->det.help_url;
    in.reporting_mta = d->hostname;
    if (ev != NULL) {
        in.client_addr = req_field(ev->client_address, client, sizeof(client));
        in.helo = req_field(ev->helo_name, helo, sizeof(helo));
        in.sample_sender = req_field(ev->sender, sender, sizeof(sender));
        in.sample_recipient = req_field(ev->recipient, rcpt, sizeof(rcpt));
    }
    if (!customer)
        msg_info("account %s: customer not notified (%s chose --no-notify)",
                 key, by->who);
    if (in.released && !release_of(d, dec, key, &in))
        customer = false;
    outbox_incident(d->outbox, d->cfg, &in, customer, now_ms);
}

static bool
is_compromised(int st)
{
    return st == CP_ST_THROTTLED || st == CP_ST_BLOCKED;
}

/*
 * Several logins of one customer stopped by their evidence at once: the
 * customer's computers or its password store, not one person's. Said at
 * the customer's level when the second (third, ...) login is stopped.
 */
static void
warn_customer(struct daemon *d, const struct cp_decision *dec,
              const char *who)
{
    const struct cp_customer *cu = dec->id.cust;
    char id[CP_KEY_MAX * 4 + 4];
    size_t bad;

    if (who != NULL || cu == NULL || cu->nlogins < 2 ||
        !is_compromised(dec->state) || is_compromised(dec->prev_state))
        return;
    bad = admin_logins_compromised(d, cu);
    if (bad < 2)
        return;
    str_escape(id, sizeof(id), cu->id, strlen(cu->id), CP_KEY_MAX);
    msg_warn("customer %s: %zu of its %zu logins are throttled or blocked "
             "at once: look at the customer's computers, not only at one "
             "person's (chokepoint show c:%s)",
             id, bad, cu->nlogins, id);
}

/*
 * Fleet mode: another host changed an account's state (its incident,
 * notices and history are that host's). Here, the account's queued mail
 * follows: held when it is blocked, released when it is released.
 */
void
incident_follow(struct daemon *d, const struct cp_decision *dec)
{
    char key[CP_KEY_MAX * 4 + 4];

    if (!dec->fleet_moved)
        return;
    str_escape(key, sizeof(key), dec->id.dkey, dec->id.dkeylen, CP_KEY_MAX);
    msg_info("account %s: %s -> %s on another host of the fleet", key,
             cp_state_name((enum cp_state)dec->fleet_from),
             cp_state_name((enum cp_state)dec->state));
    if (is_blocked(dec->state) != is_blocked(dec->fleet_from) &&
        !cp_config_state_shadow(d->cfg, dec->id.cls))
        contain(d, dec, key, is_blocked(dec->state), 0);
}

/*
 * An account changed state: make it durable and say why. A failed write
 * is kept for a retry (checkpoint.c), logged, and told to whoever asked
 * (-1, err); mail decisions go on.
 */
int64_t
incident_apply(struct daemon *d, const struct cp_decision *dec,
               const struct cp_event *ev, const struct incident_by *by,
               int64_t now_ms, char *err)
{
    struct cp_account_ref ref;
    char reason[400], e2[CP_ERR_MAX], key[CP_KEY_MAX * 4 + 4];
    const char *who = by ? by->who : NULL;
    const char *from = cp_state_name((enum cp_state)dec->prev_state);
    const char *to = cp_state_name((enum cp_state)dec->state);
    const char *actor = who ? who : "auto";
    int64_t row = -1;
    uint64_t incident;

    err[0] = '\0';
    if (!dec->state_changed ||
        !d->ms->base.ops->account(&d->ms->base, dec->id.dkey, dec->id.dkeylen,
                                  false, false, &ref))
        return 0;
    if (d->fleet != NULL && !fleet_change(d->fleet, dec, who != NULL)) {
        str_escape(key, sizeof(key), dec->id.dkey, dec->id.dkeylen,
                   CP_KEY_MAX);
        msg_info("account %s: %s -> %s gives way to the shared state %s "
                 "(another host changed it first)",
                 key, from, to, cp_state_name((enum cp_state)ref.c->state));
        return 0;
    }
    if (who != NULL)
        snprintf(reason, sizeof(reason), "%s", by->why ? by->why : "");
    else if (ref.ev != NULL)
        cp_evidence_explain(ref.ev, &d->cfg->det, now_ms, reason,
                            sizeof(reason));
    else
        snprintf(reason, sizeof(reason), "-");
    str_escape(key, sizeof(key), dec->id.dkey, dec->id.dkeylen, CP_KEY_MAX);
    /* the state and the jobs of its incident: one transaction */
    outbox_tx_begin(d->outbox);
    if (cp_sqlite_begin(d->db_sync, e2) < 0 ||
        (row = cp_sqlite_transition(d->db_sync, dec->id.dkey, dec->id.dkeylen,
                                    ref.c, from, to, now_ms, actor, reason,
                                    e2)) < 0)
        snprintf(err, CP_ERR_MAX, "%s", e2);
    incident = row > 0 ? (uint64_t)row : 0;
    {
        char num[40] = ""; /* " (incident N)", when it was recorded */

        if (incident > 0)
            snprintf(num, sizeof(num), " (incident %llu)",
                     (unsigned long long)incident);
        msg_warn("account %s: %s -> %s by %s%s: %s", key, from, to,
                 who ? who : "evidence", num, reason);
    }
    if (d->fleet != NULL) /* the fleet's history, for `history` anywhere */
        fleet_history_add(d->fleet, dec, now_ms, actor, reason, incident);
    if (by != NULL && by->tell != NULL && by->tell[0] != '\0') {
        char tell[ADMIN_TELL_MAX * 4 + 4];

        msg_info("account %s: the customer is told: %s", key,
                 str_escape(tell, sizeof(tell), by->tell, strlen(by->tell),
                            ADMIN_TELL_MAX));
    }
    warn_customer(d, dec, who);
    if (who == NULL && cp_config_state_shadow(d->cfg, dec->id.cls)) {
        /* shadow mode: the state is recorded, nothing is done about it */
        if (is_blocked(dec->state) && !is_blocked(dec->prev_state))
            msg_info("account %s: shadow mode: no notification, no hold",
                     key);
    } else if (is_blocked(dec->state) != is_blocked(dec->prev_state)) {
        /* blocked, or released: the queued mail follows, and the people
         * concerned hear of it */
        contain(d, dec, key, is_blocked(dec->state), incident);
        notify(d, dec, ev, key, by, ref.ev, reason, incident, now_ms);
    }
    if (cp_sqlite_commit(d->db_sync, e2) < 0) {
        /* the incident's outbox rows went with it */
        outbox_tx_rolled_back(d->outbox);
        if (err[0] == '\0')
            snprintf(err, CP_ERR_MAX, "%s", e2);
    }
    if (err[0] == '\0')
        return (int64_t)incident;
    msg_error("account %s: state change %s -> %s not recorded (kept, "
              "written again every checkpoint_interval): %s",
              key, from, to, err);
    ckpt_unrecorded_add(d, dec->id.dkey, dec->id.dkeylen, ref.c, from, to,
                        now_ms, actor, reason);
    return -1;
}
