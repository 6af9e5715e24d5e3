/*
 * admin.c — the admin socket used by the `chokepoint` command line.
 *
 * Protocol: the client sends one line, "[json ]COMMAND [ARG [REASON...]]\n",
 * and reads the reply until EOF. Commands: status, top [N], show ACCOUNT, history
 * ACCOUNT, block ACCOUNT REASON, release ACCOUNT REASON, self-release
 * ACCOUNT REASON (limited per period), allow ACCOUNT REASON. Replies are text
 * for people, or one JSON object with the "json" prefix. The socket is mode
 * 0600 and the peer's uid must be root's or the daemon's (SO_PEERCRED);
 * manual changes are recorded with that uid and the reason. Limits:
 * ADMIN_MAX_LINE bytes per command line; a client gets ADMIN_TIMEOUT_MS.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/explain.h"
#include "core/evidence.h"
#include "core/identity.h"
#include "core/lifecycle.h"
#include "daemon/daemon.h"
#include "daemon/fleet.h"
#include "store/redis.h"
#include "util/msg.h"
#include "util/parse.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define ADMIN_MAX_LINE 1024
#define ADMIN_TIMEOUT_MS 5000

struct admin_conn {
    uv_pipe_t pipe;
    char who[32];      /* "uid N" of the peer */
    bool reader;       /* a member of daemon.admin_read_group: reads only */
    uv_timer_t timer;
    uv_write_t wreq;
    struct daemon *d;
    struct strbuf in, out;
    int open_handles;
    bool done;
};

static void
on_closed(uv_handle_t *h)
{
    struct admin_conn *a = h->data;

    if (--a->open_handles > 0)
        return;
    sb_fini(&a->in);
    sb_fini(&a->out);
    free(a);
}

static void
admin_conn_close(struct admin_conn *a)
{
    if (uv_is_closing((uv_handle_t *)&a->pipe))
        return;
    uv_close((uv_handle_t *)&a->pipe, on_closed);
    uv_close((uv_handle_t *)&a->timer, on_closed);
}

/*
 * `chokepoint status`: one table of counters, rendered as text (a line per
 * subject) or as JSON (top-level keys, and objects per group), so the two
 * cannot drift apart. The text line of a row is its group's (or, at the
 * top level, its `line`).
 */
struct stat_row {
    const char *line;  /* text: the line it is on */
    const char *group; /* JSON: the object it is in (NULL: top level) */
    const char *key;   /* JSON key */
    const char *label; /* text: after the number */
    uint64_t v;
};

#define STAT_MAX 96

struct stat_table {
    struct stat_row row[STAT_MAX];
    size_t n;
};

static void
row(struct stat_table *t, const char *line, const char *group,
    const char *key, const char *label, uint64_t v)
{
    if (t->n < STAT_MAX) /* (a fixed list, well under the cap) */
        t->row[t->n++] = (struct stat_row){line, group, key, label, v};
}

/* Fleet mode: the shared store's connection, and degraded mode. */
static void
fleet_rows(struct daemon *d, struct stat_table *t)
{
    struct fleet_stats fs;
    struct cp_redis_stats rs;
    bool up;

    fleet_status(d->fleet, &fs, &up, &rs);
    row(t, "fleet", "fleet", "connected", "connected to Redis (1: yes)", up);
    row(t, "fleet", "fleet", "sent", "decisions sent", rs.sent);
    row(t, "fleet", "fleet", "answered", "answered", rs.answered);
    row(t, "fleet", "fleet", "settled", "END-OF-MESSAGEs settled here within "
        "their reservation (not sent)", fs.settled);
    row(t, "fleet", "fleet", "local", "decided from the local copy",
        fs.local);
    row(t, "fleet", "fleet", "late", "of them for a late answer", rs.late);
    row(t, "fleet", "fleet", "failed", "of them for an error or a lost "
        "connection", rs.failed);
    row(t, "fleet", "fleet", "errors", "error replies", rs.errors);
    row(t, "fleet", "fleet", "redirects", "Cluster redirections followed",
        rs.redirects);
    row(t, "fleet", "fleet", "connects", "connections made", rs.connects);
    row(t, "fleet", "fleet", "disconnects", "lost", rs.disconnects);
    row(t, "fleet", "fleet", "owed", "accounts with charges to hand over",
        fs.owed);
    row(t, "fleet", "fleet", "changes", "state changes to hand over",
        fs.changes);
    row(t, "fleet", "fleet", "merged", "accounts' charges handed over",
        fs.merged);
    row(t, "fleet", "fleet", "merged_changes", "state changes handed over",
        fs.merged_changes);
    row(t, "fleet", "fleet", "evidence_waiting", "accounts whose evidence "
        "gained here is not told yet", fs.gains);
    row(t, "fleet", "fleet", "evidence_taken", "times the fleet's evidence "
        "of a suspicious account was taken", fs.ev_adopted);
    row(t, "fleet", "fleet", "campaign", "bands of the campaign table told",
        rs.campaign);
    row(t, "fleet", "fleet", "campaign_back", "... whose fleet's band came "
        "back", rs.campaign_back);
    row(t, "fleet", "fleet", "dropped", "not kept to hand over (limits)",
        fs.owed_dropped + fs.changes_dropped + fs.gains_dropped +
            fs.history_unshared);
}

static void
status_rows(struct daemon *d, struct stat_table *t)
{
    const struct cp_stats *s = &d->engine.stats;
    const struct dstats *ds = &d->stats;
    size_t accts = d->ms->base.ops->count(&d->ms->base);
    size_t bytes = d->ms->base.ops->bytes(&d->ms->base);
    struct outbox_stats ob;
    struct dnsbl_stats bl;

    outbox_stats(d->outbox, &ob);
    dnsbl_stats(d->dnsbl, &bl);
    row(t, "accounts", NULL, "accounts", "tracked", accts);
    row(t, "accounts", NULL, "store_bytes", "bytes", bytes);
    row(t, "accounts", NULL, "accounts_evicted", "idle ones evicted",
        d->ms->evicted);
    row(t, "accounts", NULL, "max_accounts", "at most (store.max_accounts)",
        d->cfg->max_accounts);
    row(t, "connections", NULL, "connections", "open", d->nconns);
    row(t, "connections", NULL, "connections_refused",
        "refused at max_connections", ds->conns_refused);
    row(t, "connections", NULL, "connections_untrusted",
        "refused as untrusted callers", ds->conns_untrusted);
    row(t, "connections", NULL, "connections_over_share",
        "over a caller's share", ds->conns_peer_share);
    row(t, "connections", NULL, "accept_errors", "accept errors",
        ds->accept_errors);
    row(t, "connections", NULL, "lifetime_closes", "closed at max_lifetime",
        ds->lifetime_closes);
    row(t, "connections", NULL, "idle_timeouts", "closed idle",
        ds->idle_timeouts);
    row(t, "connections", NULL, "listen_full", "times the listen queue was "
        "full", ds->listen_full);
    row(t, "requests", NULL, "requests", "decided", s->requests);
    row(t, "requests", NULL, "pending_messages", "messages pending",
        cp_engine_pending(&d->engine));
    row(t, "requests", NULL, "reservations_expired",
        "reservations expired", s->pending_expired);
    row(t, "requests", NULL, "reservations_abandoned",
        "given back when their transaction ended", s->pending_abandoned);
    row(t, "requests", NULL, "protocol_errors", "protocol errors",
        ds->protocol_errors);
    row(t, "requests", NULL, "bad_requests", "malformed requests answered",
        ds->bad_requests);
    for (int a = 0; a < CP_ACT_COUNT; a++)
        row(t, "decisions", "decisions", cp_action_word((enum cp_action)a),
            cp_action_word((enum cp_action)a), s->by_action[a]);
    for (int a = 0; a < CP_ACT_COUNT; a++)
        row(t, "shadow_would", "shadow_would",
            cp_action_word((enum cp_action)a),
            cp_action_word((enum cp_action)a), s->shadow_would[a]);
    row(t, "delivery", "delivery", "queue_ids", "queued messages tracked",
        cp_engine_queued_count(&d->engine));
    row(t, "delivery", "delivery", "outcomes", "outcomes", s->outcomes);
    row(t, "delivery", "delivery", "outcomes_unknown",
        "for untracked queue ids", s->outcomes_unknown);
    row(t, "delivery", "delivery", "outcomes_relayed",
        "of replies (none) and forwards (a quarter)", s->outcomes_relayed);
    row(t, "content", "content", "fingerprinted", "messages fingerprinted",
        s->content);
    row(t, "content", "content", "campaign", "of a campaign", s->campaign);
    row(t, "content", "content", "refused", "refused for it",
        s->campaign_refused);
    row(t, "content", "content", "slots_replaced",
        "fingerprint slots taken over",
        d->engine.camp ? d->engine.camp->replaced : 0);
    row(t, "dnsbl", "dnsbl", "queries", "look-ups", bl.queries);
    row(t, "dnsbl", "dnsbl", "answers", "answered", bl.answers);
    row(t, "dnsbl", "dnsbl", "failures", "failed", bl.failures);
    row(t, "dnsbl", "dnsbl", "listed", "addresses listed", bl.listed);
    row(t, "dnsbl", "dnsbl", "charged", "charged to accounts", bl.charged);
    row(t, "dnsbl", "dnsbl", "cached", "cached", bl.cached);
    row(t, "outbox", "outbox", "queued", "notifications and commands "
        "waiting", ob.queued);
    row(t, "outbox", "outbox", "sent", "sent", ob.sent);
    row(t, "outbox", "outbox", "retried", "retried", ob.retried);
    row(t, "outbox", "outbox", "failed", "failed", ob.failed);
    row(t, "outbox", "outbox", "dropped", "dropped", ob.dropped);
    row(t, "outbox", "outbox", "suppressed", "over notify.max_per_hour",
        ob.suppressed);
    row(t, "store", NULL, "checkpoints", "checkpoints", ds->ckpt_runs);
    row(t, "store", NULL, "checkpoint_errors", "failed", ds->ckpt_errors);
    row(t, "store", NULL, "checkpoint_rows", "rows written", ds->ckpt_rows);
    /* 0: everything decided so far is in the store (tests wait on it) */
    row(t, "store", NULL, "checkpoint_pending", "changes not yet written",
        d->ms->dirty + d->ms->ngone + d->ckpt_running +
            cp_engine_queued_dirty(&d->engine));
    row(t, "store", NULL, "unrecorded", "state changes NOT YET STORED",
        d->nunrecorded);
    row(t, "store", NULL, "outbox_unwritten", "outbox jobs NOT YET STORED",
        outbox_unwritten(d->outbox));
    if (d->fleet != NULL)
        fleet_rows(d, t);
    row(t, "not logged (rate limit)", NULL, "refusals_unlogged",
        "refusals of blocked accounts", d->refusal_log.unlogged);
    row(t, "not logged (rate limit)", NULL, "peer_warnings_unlogged",
        "warnings about callers", d->peer_log.unlogged);
}

static void
status_text(const struct stat_table *t, struct strbuf *o)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct stat_row *r = &t->row[i];
        bool first = i == 0 || strcmp(t->row[i - 1].line, r->line) != 0;

        if (first)
            sb_printf(o, "%s%s:", i ? "\n" : "", r->line);
        sb_printf(o, "%s %llu %s", first ? "" : ",", (unsigned long long)r->v,
                  r->label);
    }
    sb_puts(o, "\n");
}

static void
status_json(const struct stat_table *t, struct strbuf *o)
{
    const char *open = NULL; /* the group object being written */

    for (size_t i = 0; i < t->n; i++) {
        const struct stat_row *r = &t->row[i];
        bool first = false;

        if (open != NULL && (r->group == NULL || strcmp(open, r->group) != 0)) {
            sb_puts(o, "}");
            open = NULL;
        }
        if (r->group != NULL && open == NULL) {
            sb_json_key(o, r->group, false);
            sb_puts(o, "{");
            open = r->group;
            first = true;
        }
        sb_json_ku64(o, r->key, r->v, first);
    }
    if (open != NULL)
        sb_puts(o, "}");
    sb_puts(o, "}\n");
}

static void
status(struct daemon *d, struct strbuf *o, bool json)
{
    int64_t up = (daemon_now_ms() - d->started_ms) / 1000;
    struct stat_table t;

    t.n = 0;
    status_rows(d, &t);
    if (!json) {
        sb_printf(o, "chokepointd %s, up %llds, config %s%s\n", CP_VERSION,
                  (long long)up, d->cfg->file,
                  d->cfg->shadow ? " (SHADOW MODE)" : "");
        status_text(&t, o);
        return;
    }
    sb_json_open(o, CP_JSON_STATUS);
    sb_json_kcstr(o, "version", CP_VERSION, false);
    sb_json_ku64(o, "uptime_s", (uint64_t)up, false);
    sb_json_kcstr(o, "config", d->cfg->file, false);
    sb_json_kbool(o, "shadow", d->cfg->shadow, false);
    status_json(&t, o);
}

/* The account's counters against the limits applied in its state
 * (`scale`: cp_limit_scale; WATCH and PROBATION lower them). */
static void
show_counters(struct daemon *d, const struct cp_identity *id,
              const struct cp_counters *c, bool tracked, double scale,
              struct strbuf *o, bool json)
{
    int64_t now = daemon_now_ms();

    for (size_t i = 0; i < id->rules->n; i++) {
        const struct cp_rule *r = &id->rules->rule[i];
        double rate, v;
        uint64_t limit = (uint64_t)floor((double)r->max * scale + 1e-9);

        cp_engine_rate(r, &rate);
        /* the level drains at the applied rate (cp_meter_apply's) */
        v = tracked ? cp_meter_level_now(c, r->slot, rate * scale, now) : 0;
        if (json) {
            sb_puts(o, i ? ",{" : "{");
            sb_json_kcstr(o, "rule", r->name, true);
            sb_json_kcstr(o, "metric", cp_metric_name(r->metric), false);
            sb_json_ku64(o, "window_s", r->window_ms / 1000, false);
            sb_json_knum(o, "value", v, false);
            sb_json_ku64(o, "limit", limit, false);
            sb_json_ku64(o, "configured_limit", r->max, false);
            sb_json_kcstr(o, "action", cp_action_name(r->action), false);
            sb_json_kbool(o, "shadow", r->shadow || d->cfg->shadow, false);
            sb_puts(o, "}");
        } else {
            char normally[48] = "";

            if (limit < r->max)
                snprintf(normally, sizeof(normally), " (normally %llu)",
                         (unsigned long long)r->max);
            sb_printf(o, "  %-20s %12.2f / %-10llu %s%s%s\n", r->name, v,
                      (unsigned long long)limit, cp_action_name(r->action),
                      r->shadow || d->cfg->shadow ? " (shadow)" : "",
                      normally);
        }
    }
}


/* State, score and evidence: text lines, or JSON members (",..."). */
static void
show_state(struct daemon *d, const struct cp_identity *id,
           const struct cp_counters *c, struct strbuf *o, bool json)
{
    struct cp_account_ref ref = {NULL, NULL};
    const struct cp_detection *det = cp_class_det(d->cfg, id->cls);
    char ev[400] = "no evidence", since[32];
    int64_t now = daemon_now_ms();

    if (!d->ms->base.ops->account(&d->ms->base, id->dkey, id->dkeylen, false,
                                  false, &ref))
        ref.ev = NULL;
    if (ref.ev != NULL)
        cp_evidence_explain(ref.ev, det, now, ev, sizeof(ev));
    cp_format_time(since, sizeof(since), (int64_t)c->state_since_s * 1000);
    if (json) {
        sb_json_kcstr(o, "state", cp_state_name((enum cp_state)c->state),
                      false);
        sb_json_kcstr(o, "since", c->state_since_s ? since : "", false);
        sb_json_ku64(o, "blocks", c->repeat, false);
        sb_json_kcstr(o, "evidence", ev, false);
        if (ref.ev != NULL)
            cp_evidence_detail(ref.ev, det, now, o, true);
        return;
    }
    sb_printf(o, "  state %s%s%s, automatic blocks so far: %u\n"
                 "  evidence: %s\n",
              cp_state_name((enum cp_state)c->state),
              c->state_since_s ? " since " : "", c->state_since_s ? since : "",
              c->repeat, ev);
    if (ref.ev != NULL)
        cp_evidence_detail(ref.ev, det, now, o, false);
}

struct hist_ctx {
    struct strbuf *o;
    bool json;
    int n;
    char key[CP_KEY_MAX * 4 + 4]; /* incident N: its account, escaped */
    const char *host;             /* fleet mode: the row's host */
};

static void list_notices(struct daemon *d, const char *key,
                         uint64_t incident, int limit, struct strbuf *o,
                         bool json);

/* "error: MSG" or {"schema":"chokepoint.error/1","error":"MSG"}: the
 * CLI exits 1 on either. Every refusal is written here. */
static void
reply_error(struct strbuf *o, bool json, const char *msg)
{
    if (json) {
        sb_json_open(o, CP_JSON_ERROR);
        sb_json_kcstr(o, "error", msg, false);
        sb_puts(o, "}\n");
    } else {
        sb_printf(o, "error: %s\n", msg);
    }
}

/* A refusal worded `msg` in JSON and `text` (a whole line) for people. */
static void
reply_error_or(struct strbuf *o, bool json, const char *msg,
               const char *text)
{
    if (json)
        reply_error(o, true, msg);
    else
        sb_puts(o, text);
}

/* Text for a terminal: as stored when it is printable ASCII (reasons are
 * escaped when written), else escaped (rows written before they were). */
static const char *
shown(char *buf, size_t n, const char *s)
{
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            return str_escape(buf, n, s, strlen(s), n / 4 - 1);
    return s;
}

/* One state change; its number is the incident number of notices. */
static void
hist_row(void *arg, const struct cp_history_row *r)
{
    struct hist_ctx *h = arg;
    char ts[32];

    cp_format_time(ts, sizeof(ts), r->t_ms);
    if (!h->json) {
        char ea[200], er[1100], ef[100], et[100], eh[400];

        sb_printf(h->o, "  #%lld%s%s  %s  %s -> %s  by %s: %s\n",
                  (long long)r->id, h->host ? "@" : "",
                  h->host ? shown(eh, sizeof(eh), h->host) : "", ts,
                  shown(ef, sizeof(ef), r->from),
                  shown(et, sizeof(et), r->to),
                  shown(ea, sizeof(ea), r->actor),
                  shown(er, sizeof(er), r->reason));
        return;
    }
    sb_puts(h->o, h->n++ ? ",{" : "{");
    sb_json_ku64(h->o, "incident", (uint64_t)r->id, true);
    sb_json_kcstr(h->o, "time", ts, false);
    sb_json_kcstr(h->o, "from", r->from, false);
    sb_json_kcstr(h->o, "to", r->to, false);
    sb_json_kcstr(h->o, "actor", r->actor, false);
    sb_json_kcstr(h->o, "reason", r->reason, false);
    if (h->host != NULL) {
        char eh[400];

        sb_json_kcstr(h->o, "host", shown(eh, sizeof(eh), h->host), false);
    }
    sb_puts(h->o, "}");
}

/* incident N: the state change of that number, and whose it was. */
static void
incident_row(void *arg, const struct cp_history_row *r)
{
    struct hist_ctx *h = arg;

    /* the outbox names the account as incident.c logs it: escaped */
    str_escape(h->key, sizeof(h->key), r->key, strlen(r->key), CP_KEY_MAX);
    if (h->json) {
        sb_json_open(h->o, CP_JSON_INCIDENT);
        sb_json_kcstr(h->o, "key", r->key, false);
        sb_puts(h->o, ",\"change\":");
    } else {
        sb_printf(h->o, "account %s\n", h->key);
    }
    hist_row(h, r);
}

static void
incident(struct daemon *d, const char *arg, size_t len, struct strbuf *o,
         bool json)
{
    struct hist_ctx h = {.o = o, .json = json};
    uint64_t id;
    int rc;

    if (len == 0 || !parse_u64(arg, len, &id) || id > INT64_MAX) {
        reply_error(o, json, "give an incident number");
        return;
    }
    rc = cp_sqlite_incident(d->db_sync, (int64_t)id, incident_row, &h);
    if (rc < 0) {
        reply_error(o, json, "the history cannot be read");
    } else if (rc == 0) {
        /* in fleet mode each host numbers its own (`history` shows the
         * host of each change: "#N@host") */
        reply_error(o, json, d->fleet != NULL
                                 ? "no such incident on this host (in fleet "
                                   "mode each host numbers its own: "
                                   "`history LOGIN` shows each change's "
                                   "host; ask that one)"
                                 : "no such incident");
    } else {
        list_notices(d, h.key, id, 100, o, json);
        if (json)
            sb_puts(o, "}\n");
    }
}

/* A row of the fleet's history: a change and the host that made it. */
static void
fleet_hist_row(void *arg, const struct fleet_history_row *r)
{
    struct hist_ctx *h = arg;

    h->host = r->host;
    hist_row(h, &r->row);
    h->host = NULL;
}

static void
show_history(struct daemon *d, const struct cp_identity *id, int limit,
             struct strbuf *o, bool json)
{
    struct hist_ctx h = {.o = o, .json = json};
    char err[CP_ERR_MAX];
    int rc;

    if (d->fleet != NULL) {
        /* the fleet's: every host's changes, each with its host and its
         * incident number there */
        size_t mark = o->len;

        if (!json)
            sb_puts(o, "  history of the fleet (newest first; #incident@host):\n");
        rc = fleet_history(d->fleet, id, limit, fleet_hist_row, &h, err);
        if (rc > 0)
            return;
        /* none (changes from before fleet mode are this host's), or
         * Redis unreachable: this host's history */
        o->len = mark;
        h.n = 0;
        if (rc < 0 && !json)
            sb_printf(o, "  (%s: this host's history)\n", err);
    }

    if (!json)
        sb_puts(o, "  history (newest first):\n");
    if (cp_sqlite_history(d->db_sync, id->dkey, id->dkeylen, limit, hist_row,
                          &h) == 0 &&
        !json)
        sb_puts(o, "  (no state changes)\n");
}

struct recent_ctx {
    struct strbuf *o;
    bool json;
    int n;
};

static void
recent_row(void *arg, const struct recent_entry *e)
{
    struct recent_ctx *c = arg;
    const char *act = cp_action_word((enum cp_action)e->action);
    const char *verdict = cp_action_word((enum cp_action)e->verdict);
    const char *stage = cp_stage_name((enum cp_stage)e->stage);
    char ts[32];

    cp_format_time(ts, sizeof(ts), e->t_ms);
    if (!c->json) {
        char text[RECENT_TEXT * 4 + 4]; /* may carry a hostile login */

        str_escape(text, sizeof(text), e->text, strlen(e->text),
                   RECENT_TEXT);
        sb_printf(c->o, "    %s  %-14s %s%s%s%s%s%s%s%s\n", ts, stage, act,
                  e->shadow ? " (shadow: would " : "",
                  e->shadow ? verdict : "", e->shadow ? ")" : "",
                  e->rule[0] ? "  rule " : "", e->rule, text[0] ? "  " : "",
                  text);
        return;
    }
    sb_puts(c->o, c->n++ ? ",{" : "{");
    sb_json_kcstr(c->o, "time", ts, true);
    sb_json_kcstr(c->o, "stage", stage, false);
    sb_json_kcstr(c->o, "action", act, false);
    sb_json_kcstr(c->o, "verdict", verdict, false);
    sb_json_kbool(c->o, "shadow", e->shadow, false);
    sb_json_kcstr(c->o, "state", cp_state_name((enum cp_state)e->state),
                  false);
    sb_json_kcstr(c->o, "rule", e->rule, false);
    sb_json_kcstr(c->o, "text", e->text, false);
    sb_puts(c->o, "}");
}

/* The account's latest notable decisions (the daemon's ring, recent.c). */
static void
show_recent(struct daemon *d, const struct cp_identity *id, struct strbuf *o,
            bool json)
{
    struct recent_ctx c = {o, json, 0};

    if (!json)
        sb_puts(o, "  recent decisions (newest first):\n");
    if (recent_each(d->recent, id->dkey, id->dkeylen, 10, recent_row, &c) == 0 &&
        !json)
        sb_puts(o, "    (none since the daemon started)\n");
}

/*
 * The logins, client addresses and HELOs the account's mail came with
 * while it was under suspicion (seen.c): the computers and the passwords
 * the abuse desk should look at.
 */
static void
show_seen(struct daemon *d, const struct cp_identity *id, struct strbuf *o,
          bool json)
{
    static const char *const name[SEEN_KINDS] = {"logins", "clients",
                                                 "helos"};
    static const char *const title[SEEN_KINDS] = {
        "logins", "client addresses", "HELO names"};
    bool any = false;

    if (!json)
        sb_puts(o, "  seen while under suspicion (since the daemon "
                   "started; most recent first):\n");
    for (int k = 0; k < SEEN_KINDS; k++) {
        const struct seen_list *l =
            seen_get(d->seen, id->dkey, id->dkeylen, (enum seen_kind)k);
        size_t n = l ? l->n : 0, ord[SEEN_PER];

        /* most recently seen first */
        for (size_t i = 0; i < n; i++) {
            size_t j = i;

            while (j > 0 && l->v[ord[j - 1]].last_ms < l->v[i].last_ms) {
                ord[j] = ord[j - 1];
                j--;
            }
            ord[j] = i;
        }
        if (json) {
            sb_json_key(o, name[k], k == 0);
            sb_puts(o, "[");
        } else if (n > 0) {
            sb_printf(o, "    %s:\n", title[k]);
            any = true;
        }
        for (size_t i = 0; i < n; i++) {
            const struct seen_item *it = &l->v[ord[i]];
            char first[32], last[32];

            cp_format_time(first, sizeof(first), it->first_ms);
            cp_format_time(last, sizeof(last), it->last_ms);
            if (json) {
                sb_puts(o, i ? ",{" : "{");
                sb_json_kcstr(o, "value", it->s, true);
                sb_json_ku64(o, "requests", it->count, false);
                sb_json_kcstr(o, "first", first, false);
                sb_json_kcstr(o, "last", last, false);
                sb_puts(o, "}");
            } else {
                char v[SEEN_LEN * 4];

                str_escape(v, sizeof(v), it->s, strlen(it->s), SEEN_LEN);
                sb_printf(o, "      %-40s %6u requests  %s .. %s\n", v,
                          (unsigned)it->count, first, last);
            }
        }
        if (json) {
            char more[16];

            snprintf(more, sizeof(more), "%s_more", name[k]);
            sb_puts(o, "]");
            sb_json_ku64(o, more, l ? l->more : 0, false);
        } else if (l != NULL && l->more > 0) {
            sb_printf(o, "      (and %u more, not kept)\n", (unsigned)l->more);
        }
    }
    if (!json && !any)
        sb_puts(o, "    (nothing: not under suspicion since the daemon "
                   "started)\n");
}

struct notice_ctx {
    struct strbuf *o, held; /* held: JSON objects or text lines */
    bool json;
    int n, nheld;
};

/* The queue ids of a hold command's input, on one line or as a JSON
 * array. */
static void
held_ids(struct strbuf *o, const char *p, size_t len, bool json)
{
    const char *end = p + len;
    int n = 0;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = (size_t)((nl ? nl : end) - p);

        if (l > 0) {
            if (json) {
                sb_puts(o, n ? "," : "");
                sb_json_str(o, p, l);
            } else {
                char q[64 * 4 + 4]; /* a queue id, escaped */

                sb_printf(o, " %s", str_escape(q, sizeof(q), p, l,
                                               64));
            }
            n++;
        }
        if (nl == NULL)
            break;
        p = nl + 1;
    }
}

/* One notice (customer mail, ARF report, webhook) or command (hold,
 * release) of the account's incidents, done or pending. */
static void
notice_row(void *arg, const struct cp_outbox_done_row *r)
{
    struct notice_ctx *c = arg;
    const char *to = r->to ? r->to : r->target;
    char ts[32];

    cp_format_time(ts, sizeof(ts), r->t_ms);
    if (r->body != NULL && strcmp(r->what, "hold") == 0) {
        struct strbuf *h = &c->held;

        if (c->json) {
            sb_puts(h, c->nheld ? ",{" : "{");
            sb_json_ku64(h, "incident", r->incident, true);
            sb_json_kcstr(h, "outcome", r->outcome, false);
            sb_puts(h, ",\"queue_ids\":[");
            held_ids(h, r->body, r->body_len, true);
            sb_puts(h, "]}");
        } else {
            char oc[600];

            sb_printf(h, "    #%llu (%s):", (unsigned long long)r->incident,
                      shown(oc, sizeof(oc), r->outcome));
            held_ids(h, r->body, r->body_len, false);
            sb_puts(h, "\n");
        }
        c->nheld++;
    }
    if (c->json) {
        sb_puts(c->o, c->n++ ? ",{" : "{");
        sb_json_kcstr(c->o, "time", ts, true);
        sb_json_kcstr(c->o, "what", r->what, false);
        sb_json_kcstr(c->o, "to", to, false);
        sb_json_ku64(c->o, "incident", r->incident, false);
        sb_json_kcstr(c->o, "outcome", r->outcome, false);
        sb_json_ku64(c->o, "attempts", r->attempts, false);
        sb_puts(c->o, "}");
        return;
    }
    {
        char t[400], oc[600];

        sb_printf(c->o, "    %s  #%llu  %-13s %s  %s%s (attempts %u)\n", ts,
                  (unsigned long long)r->incident, r->what,
                  shown(t, sizeof(t), to), r->pending ? "due: " : "",
                  shown(oc, sizeof(oc), r->outcome), r->attempts);
        c->n++;
    }
}

/* The notices sent for the incidents of account `key` (as the outbox
 * names it: escaped), or of one of them (`incident`, 0: all), pending
 * ones too, the hold and release commands, and the queue ids held. */
static void
list_notices(struct daemon *d, const char *key, uint64_t incident, int limit,
             struct strbuf *o, bool json)
{
    struct notice_ctx c = {.o = o, .json = json};
    char err[CP_ERR_MAX];
    bool failed;

    sb_init(&c.held);
    if (!json)
        sb_puts(o, "  notices and commands (pending first, then newest "
                   "first):\n");
    else
        sb_puts(o, ",\"notices\":[");
    failed = cp_sqlite_outbox_account(d->db_sync, key, incident, limit,
                                      notice_row, &c, err) < 0;
    if (failed)
        msg_error("admin: the notices of %s cannot be read: %s", key, err);
    if (failed && !json)
        sb_puts(o, "    (cannot be read from the store)\n");
    else if (c.n == 0 && !json)
        sb_puts(o, "    (none)\n");
    if (json) {
        sb_puts(o, "],\"held\":[");
        sb_append(o, c.held.data, c.held.len);
        sb_puts(o, "]");
        if (failed)
            sb_json_kcstr(o, "notices_error", err, false);
    } else {
        sb_puts(o, "  queue ids held:\n");
        if (c.nheld == 0)
            sb_puts(o, "    (none)\n");
        else
            sb_append(o, c.held.data, c.held.len);
    }
    sb_fini(&c.held);
}

static void
show_notices(struct daemon *d, const struct cp_identity *id, int limit,
             struct strbuf *o, bool json)
{
    char key[CP_KEY_MAX * 4 + 4];

    str_escape(key, sizeof(key), id->dkey, id->dkeylen, CP_KEY_MAX);
    list_notices(d, key, 0, limit, o, json);
}

/* The state of login `login` (its own record, u:LOGIN), for a customer's
 * list of logins; false if it never sent. */
static bool
login_state(struct daemon *d, const char *login, struct cp_counters *c,
            double *score)
{
    struct cp_account_ref ref;
    char key[CP_KEY_MAX];
    size_t n = strlen(login);

    *score = 0;
    if (n + 2 >= sizeof(key))
        return false; /* keyed by its hash: not listed */
    memcpy(key, "u:", 2);
    memcpy(key + 2, login, n + 1);
    if (!d->ms->base.ops->account(&d->ms->base, key, n + 2, false, false,
                                  &ref))
        return false;
    *c = *ref.c;
    if (ref.ev != NULL)
        *score = cp_evidence_score(ref.ev, &d->cfg->det, daemon_now_ms());
    return true;
}

static bool
compromised(int st)
{
    return st == CP_ST_THROTTLED || st == CP_ST_BLOCKED;
}

size_t
admin_logins_compromised(struct daemon *d, const struct cp_customer *cu)
{
    size_t bad = 0;

    for (size_t i = 0; i < cu->nlogins; i++) {
        struct cp_counters c;
        double score;

        bad += login_state(d, cu->logins[i], &c, &score) &&
               compromised(c.state);
    }
    return bad;
}

/*
 * A customer's logins (from the map) with their states: each login has
 * its own evidence and state, so one stolen login is stopped while its
 * colleagues go on sending; several compromised at once is shown here
 * (the customer's PCs or its password store, not one person's).
 */
static void
show_logins(struct daemon *d, const struct cp_customer *cu, struct strbuf *o,
            bool json)
{
    size_t bad = 0;

    if (!json)
        sb_printf(o, "  logins (%zu in the map%s):\n", cu->nlogins,
                  cu->nnetworks ? ", and networks: their addresses are "
                                  "accounts of their own"
                                : "");
    for (size_t i = 0; i < cu->nlogins; i++) {
        struct cp_counters c;
        double score;
        bool seen = login_state(d, cu->logins[i], &c, &score);
        const char *st = seen ? cp_state_name((enum cp_state)c.state)
                              : "NORMAL";

        bad += seen && compromised(c.state);
        if (json) {
            sb_puts(o, i ? ",{" : "{");
            sb_json_kcstr(o, "login", cu->logins[i], true);
            sb_json_kcstr(o, "state", st, false);
            sb_json_kbool(o, "seen", seen, false);
            sb_json_knum(o, "score", score, false);
            sb_puts(o, "}");
        } else {
            char login[CP_KEY_MAX * 4 + 4];

            str_escape(login, sizeof(login), cu->logins[i],
                       strlen(cu->logins[i]), CP_KEY_MAX);
            sb_printf(o, "    %-40s %-11s score %5.1f%s\n", login, st, score,
                      seen ? "" : "  (no mail yet)");
        }
    }
    if (json) {
        sb_puts(o, "]");
        sb_json_ku64(o, "logins_compromised", bad, false);
    } else if (bad > 1) {
        sb_printf(o, "  %zu of its logins are throttled or blocked at once: "
                     "look at the customer's computers, not only at one "
                     "person's\n",
                  bad);
    }
}

/*
 * Does chokepoint know the account: in the customer map, tracked (mail
 * seen since it was last idle long enough to be forgotten), or with a
 * recorded history? A mistyped login is none of these.
 */
static bool
account_known(struct daemon *d, const struct cp_identity *id)
{
    struct cp_counters c;

    return id->cust != NULL ||
           d->ms->base.ops->peek(&d->ms->base, id->key, id->keylen, &c) ||
           d->ms->base.ops->peek(&d->ms->base, id->dkey, id->dkeylen, &c) ||
           cp_sqlite_count_actor(d->db_sync, id->dkey, id->dkeylen, "", 0) > 0;
}

/* "unknown account 'KEY': ..." for an account chokepoint does not know. */
static void
unknown_account(const struct cp_identity *id, const char *hint,
                struct strbuf *o, bool json)
{
    char key[CP_KEY_MAX * 4 + 4], msg[CP_KEY_MAX * 4 + 300];

    str_escape(key, sizeof(key), id->dkey, id->dkeylen, CP_KEY_MAX);
    snprintf(msg, sizeof(msg),
             "unknown account '%s': no mail seen from it and not in the "
             "customer map%s",
             key, hint);
    reply_error(o, json, msg);
}

static void
show(struct daemon *d, const char *arg, size_t len, struct strbuf *o,
     bool json)
{
    struct cp_identity id;
    struct cp_counters c, st;
    bool tracked, one;
    double scale;
    char fleet_err[CP_ERR_MAX];

    if (len == 0 || cp_identity_lookup(d->cfg, arg, len, &id) < 0) {
        reply_error(o, json, "unknown account");
        return;
    }
    /* fleet mode: the shared state, from any host */
    if (d->fleet != NULL && fleet_refresh(d->fleet, &id, fleet_err) < 0)
        msg_warn("show: %s", fleet_err);
    else
        fleet_err[0] = '\0';
    if (!account_known(d, &id)) {
        unknown_account(&id, "", o, json);
        return;
    }
    memset(&c, 0, sizeof(c));
    memset(&st, 0, sizeof(st));
    tracked = d->ms->base.ops->peek(&d->ms->base, id.key, id.keylen, &c);
    one = cp_identity_one_record(&id);
    if (one)
        st = c;
    else
        d->ms->base.ops->peek(&d->ms->base, id.dkey, id.dkeylen, &st);
    /* the limits applied in the state that decides its mail */
    scale = cp_limit_scale(d->cfg, cp_state_deciding(st.state,
                                                     one ? CP_ST_NORMAL
                                                         : c.state));
    if (json)
        sb_json_open(o, CP_JSON_SHOW);
    if (!json) {
        char key[CP_KEY_MAX * 4 + 4], acct[CP_KEY_MAX * 4 + 4];

        str_escape(key, sizeof(key), id.key, id.keylen, CP_KEY_MAX);
        str_escape(acct, sizeof(acct), id.dkey, id.dkeylen, CP_KEY_MAX);
        sb_printf(o, "account %s  customer %s  class %s%s\n", acct,
                  id.cust ? id.cust->id : "-", id.cls->name,
                  tracked ? "" : "  (no traffic recorded)");
        if (fleet_err[0] != '\0')
            sb_printf(o, "  note: %s\n", fleet_err);
        show_state(d, &id, &st, o, false);
        if (one && id.cust != NULL && id.cust->nlogins > 0 &&
            id.dkeylen > 2 && memcmp(id.dkey, "c:", 2) == 0)
            sb_puts(o, "  (that is the customer's own record; each login "
                       "has a state of its own, listed below)\n");
        if (!one)
            sb_printf(o, "  limits and the customer's own state: %s (%s)\n",
                      key, cp_state_name((enum cp_state)c.state));
        else if (id.cust != NULL)
            show_logins(d, id.cust, o, false);
        sb_puts(o, "  rule                        level / limit      action\n");
        show_counters(d, &id, &c, tracked, scale, o, false);
        show_seen(d, &id, o, false);
        show_recent(d, &id, o, false);
        show_history(d, &id, 10, o, false);
        show_notices(d, &id, 20, o, false);
        return;
    }
    show_state(d, &id, &st, o, true);
    sb_json_kstr(o, "key", id.key, id.keylen, false);
    sb_json_kstr(o, "account", id.dkey, id.dkeylen, false);
    sb_json_kcstr(o, "customer", id.cust ? id.cust->id : NULL, false);
    sb_json_kcstr(o, "customer_state",
                  id.cust ? cp_state_name((enum cp_state)(one ? st.state
                                                              : c.state))
                          : NULL,
                  false);
    if (one && id.cust != NULL) {
        sb_puts(o, ",\"logins\":[");
        show_logins(d, id.cust, o, true);
    }
    sb_json_kcstr(o, "class", id.cls->name, false);
    sb_json_kbool(o, "tracked", tracked, false);
    sb_puts(o, ",\"counters\":[");
    show_counters(d, &id, &c, tracked, scale, o, true);
    sb_puts(o, "],\"seen\":{");
    show_seen(d, &id, o, true);
    sb_puts(o, "},\"recent\":[");
    show_recent(d, &id, o, true);
    sb_puts(o, "],\"history\":[");
    show_history(d, &id, 10, o, true);
    sb_puts(o, "]");
    show_notices(d, &id, 20, o, true);
    sb_puts(o, "}\n");
}

static void
on_written(uv_write_t *w, int status)
{
    (void)status;
    admin_conn_close(w->data);
}

/*
 * Self-service release (the customer says the clean-up is done): only from
 * BLOCKED (an automatic block; MANUAL_HOLD is the abuse desk's), at most
 * containment.self_release_max times per self_release_period. NULL if
 * allowed, else why not.
 */
static const char *
self_release_refused(struct daemon *d, const struct cp_identity *id,
                     char *why, size_t n)
{
    const struct cp_containment *c = &d->cfg->contain;
    struct cp_counters cnt;
    long used;

    if (!d->ms->base.ops->peek(&d->ms->base, id->dkey, id->dkeylen, &cnt))
        cnt.state = CP_ST_NORMAL;
    if (cnt.state == CP_ST_MANUAL_HOLD)
        return "the abuse desk put this account on hold: only the desk "
               "can release it";
    if (cnt.state != CP_ST_BLOCKED) {
        snprintf(why, n, "the account is %s, not blocked: there is nothing "
                 "to release",
                 cp_state_name((enum cp_state)cnt.state));
        return why;
    }
    used = cp_sqlite_count_actor(d->db_sync, id->dkey, id->dkeylen,
                                 "self-service",
                                 daemon_now_ms() -
                                     (int64_t)c->self_release_period_ms);
    if (used < 0)
        return "the history cannot be read";
    if ((unsigned long)used >= c->self_release_max) {
        snprintf(why, n,
                 "self-service release used %ld of %u times in the last %llu "
                 "days: the abuse desk must release this account",
                 used, c->self_release_max,
                 (unsigned long long)(c->self_release_period_ms / 86400000));
        return why;
    }
    return NULL;
}

#define ADMIN_BY_MAX 64

/* An operator's name as the history records it: letters, digits and
 * . _ - @ only (it goes into logs, notices and webhooks as it is). */
static bool
operator_name(const char *s, size_t n, char *out, size_t outsz)
{
    if (n == 0 || n > ADMIN_BY_MAX || n >= outsz)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-@", s[i]))
            return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

/* The words a command line may start with (the CLI's options). */
struct admin_opts {
    bool json, create, quiet;
    char by[ADMIN_BY_MAX + 1]; /* the operator's name; "" none */
    char tell[ADMIN_TELL_MAX + 1]; /* what the customer is told; "" none */
};

/* block / release / allow ACCOUNT REASON: a person's state change;
 * self-release ACCOUNT REASON: the customer's own, limited. */
static void
manual(struct admin_conn *a, int to, bool self, const struct admin_opts *op,
       const char *args, size_t len)
{
    struct daemon *d = a->d;
    struct strbuf *o = &a->out;
    bool json = op->json;
    struct incident_by by = {a->who, NULL, !self && op->quiet,
                             op->tell[0] ? op->tell : NULL};
    const char *sp = memchr(args, ' ', len);
    size_t klen = sp ? (size_t)(sp - args) : len;
    char reason[1024], actor[128], err[CP_ERR_MAX];
    struct cp_identity id;
    struct cp_decision dec;
    int64_t now, incident;
    int rc;

    /* the reason goes into the log, the history, notices and webhooks:
     * escaped here (controls, terminal escapes, 8-bit as \xNN) */
    str_escape(reason, sizeof(reason), sp ? sp + 1 : "",
               sp ? len - klen - 1 : 0, 200);
    if (klen == 0 || reason[0] == '\0' ||
        cp_identity_lookup(d->cfg, args, klen, &id) < 0) {
        reply_error_or(o, json, "usage: ACCOUNT REASON",
                       "error: give an account and a reason\n");
        return;
    }
    /* fleet mode: act on the shared state (another host may have changed
     * it); unreachable, the change is made here and handed over later */
    if (d->fleet != NULL && fleet_refresh(d->fleet, &id, err) < 0)
        msg_warn("%s: %s", self ? "release" : "state command", err);
    if ((self || !op->create) && !account_known(d, &id)) {
        unknown_account(&id, " (a typing error? --create acts on it anyway)",
                        o, json);
        return;
    }
    if (self) {
        char why[200];
        const char *no = self_release_refused(d, &id, why, sizeof(why));

        if (no != NULL) {
            reply_error(o, json, no);
            return;
        }
        snprintf(actor, sizeof(actor), "self-service (%s)", a->who);
        by.who = actor;
    } else if (op->by[0] != '\0') {
        /* the person's name (sudo's SUDO_USER, or --by), and the uid
         * that vouches for it */
        snprintf(actor, sizeof(actor), "%s (%s)", op->by, a->who);
        by.who = actor;
    }
    by.why = reason;
    now = daemon_now_ms();
    rc = cp_engine_set_state(&d->engine, &id, to, now, &dec);
    if (rc < 0) {
        char msg[64];

        snprintf(msg, sizeof(msg), "account is %s%s",
                 cp_state_name((enum cp_state)dec.state),
                 json ? "" : ": nothing to do");
        reply_error(o, json, msg);
        return;
    }
    if ((incident = incident_apply(d, &dec, NULL, &by, now, err)) < 0) {
        /* in force (the answers follow it), but not yet durable */
        char msg[CP_ERR_MAX + 200];

        snprintf(msg, sizeof(msg),
                 "%s is in force, but the store write failed (%s): it is "
                 "retried every checkpoint and lost if chokepointd stops "
                 "before it succeeds",
                 cp_state_name((enum cp_state)dec.state), err);
        reply_error(o, json, msg);
        return;
    }
    if (json) {
        sb_json_open(o, CP_JSON_CHANGE);
        sb_json_kstr(o, "key", id.dkey, id.dkeylen, false);
        sb_json_kcstr(o, "from", cp_state_name((enum cp_state)dec.prev_state),
                      false);
        sb_json_kcstr(o, "to", cp_state_name((enum cp_state)dec.state),
                      false);
        sb_json_ku64(o, "incident", (uint64_t)incident, false);
        sb_puts(o, "}\n");
    } else {
        char key[CP_KEY_MAX * 4 + 4];

        str_escape(key, sizeof(key), id.dkey, id.dkeylen, CP_KEY_MAX);
        sb_printf(o, "%s: %s -> %s (incident %lld)\n", key,
                  cp_state_name((enum cp_state)dec.prev_state),
                  cp_state_name((enum cp_state)dec.state),
                  (long long)incident);
    }
}

static void
history(struct daemon *d, const char *arg, size_t len, struct strbuf *o,
        bool json)
{
    struct cp_identity id;

    if (len == 0 || cp_identity_lookup(d->cfg, arg, len, &id) < 0) {
        reply_error(o, json, "unknown account");
        return;
    }
    if (!account_known(d, &id)) {
        unknown_account(&id, "", o, json);
        return;
    }
    if (json) {
        sb_json_open(o, CP_JSON_HISTORY);
        sb_json_kstr(o, "key", id.dkey, id.dkeylen, false);
        sb_puts(o, ",\"history\":[");
    } else {
        char key[CP_KEY_MAX * 4 + 4];

        str_escape(key, sizeof(key), id.dkey, id.dkeylen, CP_KEY_MAX);
        sb_printf(o, "account %s\n", key);
    }
    show_history(d, &id, 100, o, json);
    if (json)
        sb_puts(o, "]}\n");
}

#define ADMIN_TOP_MAX 100

/* top [N]: accounts by state and evidence score. */
static void
top(struct daemon *d, const char *arg, size_t len, struct strbuf *o,
    bool json)
{
    static struct memstore_top_row rows[ADMIN_TOP_MAX];
    uint64_t n = 20;
    size_t k;

    if (len > 0 && (!parse_u64(arg, len, &n) || n == 0 || n > ADMIN_TOP_MAX)) {
        reply_error(o, json, "top N: N is how many accounts, 1 to 100");
        return;
    }
    k = memstore_top(d->ms, &d->cfg->det, daemon_now_ms(), rows, (size_t)n);
    if (json) {
        sb_json_open(o, CP_JSON_TOP);
        sb_puts(o, ",\"accounts\":[");
    } else {
        sb_puts(o, "  state        score  account\n");
    }
    for (size_t i = 0; i < k; i++) {
        const char *st = cp_state_name((enum cp_state)rows[i].state);

        if (json) {
            sb_puts(o, i ? ",{" : "{");
            sb_json_kstr(o, "key", rows[i].key, rows[i].keylen, true);
            sb_json_kcstr(o, "state", st, false);
            sb_json_knum(o, "score", rows[i].score, false);
            sb_puts(o, "}");
        } else {
            char key[CP_KEY_MAX * 4 + 4];

            str_escape(key, sizeof(key), rows[i].key, rows[i].keylen,
                       CP_KEY_MAX);
            sb_printf(o, "  %-11s %6.1f  %s\n", st, rows[i].score, key);
        }
    }
    if (json)
        sb_puts(o, "]}\n");
}

static bool
is_cmd(const char *line, size_t len, const char *cmd, const char **arg,
       size_t *alen)
{
    size_t n = strlen(cmd);

    if (len < n + 2 || memcmp(line, cmd, n) != 0 || line[n] != ' ')
        return false;
    *arg = line + n + 1;
    *alen = len - n - 1;
    return true;
}

/* `chokepoint reload`: SIGHUP's work, and the answer (taken, or why not). */
static void
reload_cmd(struct admin_conn *a, bool json)
{
    struct daemon *d = a->d;
    char err[CP_ERR_MAX], msg[CP_ERR_MAX + 64];

    msg_info("reload asked by %s", a->who);
    if (daemon_reload(d, err) < 0) {
        snprintf(msg, sizeof(msg),
                 "reload refused, the running configuration stays: %s", err);
        reply_error(&a->out, json, msg);
        return;
    }
    if (json) {
        sb_json_open(&a->out, CP_JSON_RELOAD);
        sb_json_kcstr(&a->out, "reloaded", d->cfg->file, false);
        sb_json_ku64(&a->out, "classes", d->cfg->nclasses, false);
        sb_json_ku64(&a->out, "customers", d->cfg->ncustomers, false);
        sb_puts(&a->out, "}\n");
    } else {
        sb_printf(&a->out, "reloaded %s: %zu classes, %zu customers\n",
                  d->cfg->file, d->cfg->nclasses, d->cfg->ncustomers);
    }
}

/* `line` starts with `word` and a space: step over them. */
static bool
take(const char **line, size_t *len, const char *word)
{
    size_t n = strlen(word);

    if (*len <= n || memcmp(*line, word, n) != 0 || (*line)[n] != ' ')
        return false;
    *line += n + 1;
    *len -= n + 1;
    return true;
}

/* "tell LEN:TEXT " (the customer's text, which may hold spaces, so its
 * length goes first): copied into o->tell; false for a bad one. */
static bool
read_tell(const char **line, size_t *len, struct admin_opts *o)
{
    const char *p = *line, *end = *line + *len;
    size_t n = 0;

    while (p < end && *p >= '0' && *p <= '9' && n <= ADMIN_TELL_MAX)
        n = n * 10 + (size_t)(*p++ - '0');
    if (p == *line || p >= end || *p != ':' || n == 0 ||
        n > ADMIN_TELL_MAX || (size_t)(end - p) < n + 2 || p[n + 1] != ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[1 + i] < 0x20 || p[1 + i] == 0x7f)
            return false; /* one line of text for a person */
    memcpy(o->tell, p + 1, n);
    o->tell[n] = '\0';
    *len -= (size_t)(p + n + 2 - *line);
    *line = p + n + 2;
    return true;
}

/* The option words a command line starts with, in the CLI's order; false
 * (answered) for a bad operator name or customer text. */
static bool
read_opts(struct admin_conn *a, const char **line, size_t *len,
          struct admin_opts *o)
{
    const char *sp;

    memset(o, 0, sizeof(*o));
    o->json = take(line, len, "json");
    o->create = take(line, len, "create");
    o->quiet = take(line, len, "quiet");
    if (take(line, len, "tell") && !read_tell(line, len, o)) {
        reply_error_or(&a->out, o->json, "bad customer text",
                       "error: bad customer text (one line of printable "
                       "text, at most 512 bytes)\n");
        return false;
    }
    if (!take(line, len, "by"))
        return true;
    sp = memchr(*line, ' ', *len);
    if (sp == NULL ||
        !operator_name(*line, (size_t)(sp - *line), o->by, sizeof(o->by))) {
        reply_error_or(&a->out, o->json, "bad operator name",
                       "error: bad operator name (letters, digits, . _ - "
                       "@, at most 64)\n");
        return false;
    }
    *len -= (size_t)(sp + 1 - *line);
    *line = sp + 1;
    return true;
}

/* A command that changes nothing: open to daemon.admin_read_group. */
static bool
reading(const char *line, size_t len)
{
    static const char *const cmds[] = {"status", "top", "show", "history",
                                       "incident"};

    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        size_t n = strlen(cmds[i]);

        if (len >= n && memcmp(line, cmds[i], n) == 0 &&
            (len == n || line[n] == ' '))
            return true;
    }
    return false;
}

static void
run_command(struct admin_conn *a, const char *line, size_t len)
{
    const char *arg;
    size_t alen;
    struct admin_opts op;
    bool json;

    if (!read_opts(a, &line, &len, &op))
        return;
    json = op.json;
    if (a->reader && !reading(line, len)) {
        char esc[80];

        msg_warn("admin: refused \"%s\" from %s: a member of "
                 "daemon.admin_read_group may only read",
                 str_escape(esc, sizeof(esc), line, len, 40), a->who);
        reply_error(&a->out, json,
                    "permission denied: members of daemon.admin_read_group "
                    "may only read (status, top, show, history, incident); "
                    "ask the abuse desk (root) for the rest");
        return;
    }
    if (len == 6 && memcmp(line, "status", 6) == 0) {
        status(a->d, &a->out, json);
    } else if (len == 6 && memcmp(line, "reload", 6) == 0) {
        reload_cmd(a, json);
    } else if (len == 3 && memcmp(line, "top", 3) == 0) {
        top(a->d, "", 0, &a->out, json);
    } else if (is_cmd(line, len, "top", &arg, &alen)) {
        top(a->d, arg, alen, &a->out, json);
    } else if (is_cmd(line, len, "show", &arg, &alen)) {
        show(a->d, arg, alen, &a->out, json);
    } else if (is_cmd(line, len, "incident", &arg, &alen)) {
        incident(a->d, arg, alen, &a->out, json);
    } else if (is_cmd(line, len, "history", &arg, &alen)) {
        history(a->d, arg, alen, &a->out, json);
    } else if (is_cmd(line, len, "block", &arg, &alen)) {
        manual(a, CP_ST_MANUAL_HOLD, false, &op, arg, alen);
    } else if (is_cmd(line, len, "release", &arg, &alen)) {
        manual(a, CP_ST_PROBATION, false, &op, arg, alen);
    } else if (is_cmd(line, len, "self-release", &arg, &alen)) {
        manual(a, CP_ST_PROBATION, true, &op, arg, alen);
    } else if (is_cmd(line, len, "allow", &arg, &alen)) {
        manual(a, CP_ST_ALLOWED, false, &op, arg, alen);
    } else {
        char esc[80];

        msg_warn("admin: unknown command \"%s\"",
                 str_escape(esc, sizeof(esc), line, len, 40));
        reply_error_or(&a->out, json, "unknown command",
                       "error: unknown command (status, top, show, history, "
                       "incident, block, release, self-release, allow, "
                       "reload)\n");
    }
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char rbuf[ADMIN_MAX_LINE];

    (void)h;
    (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *a = s->data;
    char *nl;
    uv_buf_t wb;

    if (a->done)
        return;
    if (nread < 0) {
        admin_conn_close(a);
        return;
    }
    sb_append(&a->in, buf->base, (size_t)nread);
    if (a->in.len > ADMIN_MAX_LINE) {
        msg_warn("admin: command line too long");
        admin_conn_close(a);
        return;
    }
    if ((nl = memchr(a->in.data, '\n', a->in.len)) == NULL)
        return;
    a->done = true;
    uv_read_stop(s);
    run_command(a, a->in.data, (size_t)(nl - a->in.data));
    wb = uv_buf_init(a->out.data, (unsigned)a->out.len);
    a->wreq.data = a;
    if (uv_write(&a->wreq, s, &wb, 1, on_written) < 0)
        admin_conn_close(a);
}

static void
on_timeout(uv_timer_t *t)
{
    struct admin_conn *a = t->data;

    if (!a->done)
        admin_conn_close(a);
}

/* Is the peer (`cred`, socket `fd`) in group `gid`: its primary group or
 * one of its supplementary groups (SO_PEERGROUPS, as at its connect)? */
static bool
peer_in_group(int fd, const struct ucred *cred, gid_t gid)
{
    gid_t groups[256];
    socklen_t len = sizeof(groups);

    if (cred->gid == gid)
        return true;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
        return false; /* more than 256 groups: the primary one decides */
    for (size_t i = 0; i < len / sizeof(gid_t); i++)
        if (groups[i] == gid)
            return true;
    return false;
}

/* Root and the daemon's own user may administer it; members of
 * daemon.admin_read_group (first-line staff) may read. */
static bool
peer_ok(struct admin_conn *a)
{
    const struct cp_group *rg = &a->d->admin_readers;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    uv_os_fd_t fd;

    if (uv_fileno((uv_handle_t *)&a->pipe, &fd) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false;
    snprintf(a->who, sizeof(a->who), "uid %u", (unsigned)cred.uid);
    if (cred.uid == 0 || cred.uid == geteuid())
        return true;
    if (rg->set && peer_in_group(fd, &cred, rg->gid)) {
        a->reader = true;
        return true;
    }
    msg_warn("admin: refused a connection from uid %u", (unsigned)cred.uid);
    return false;
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct daemon *d = server->data;
    struct admin_conn *a;

    if (status < 0)
        return;
    a = xcalloc(1, sizeof(*a));
    a->d = d;
    sb_init(&a->in);
    sb_init(&a->out);
    uv_pipe_init(d->loop, &a->pipe, 0);
    uv_timer_init(d->loop, &a->timer);
    a->pipe.data = a;
    a->timer.data = a;
    a->open_handles = 2;
    if (uv_accept(server, (uv_stream_t *)&a->pipe) < 0 || !peer_ok(a)) {
        admin_conn_close(a);
        return;
    }
    uv_timer_start(&a->timer, on_timeout, ADMIN_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&a->pipe, on_alloc, on_read);
}

/* Warn when daemon.admin_read_group cannot reach the admin socket: its
 * directory must be searchable by the group. */
static void
reader_reach(const char *path, gid_t gid)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    struct stat st;

    if (slash == NULL)
        return;
    snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path),
             path);
    if (stat(dir, &st) == 0 && !(st.st_mode & S_IXOTH) &&
        !(st.st_gid == gid && (st.st_mode & S_IXGRP)))
        msg_warn("daemon.admin_read_group: its members cannot reach %s: "
                 "directory %s (mode %04o, group %lu) is not searchable by "
                 "the group; give it to the group or put the admin socket "
                 "in a directory of its own",
                 path, dir, (unsigned)(st.st_mode & 07777),
                 (unsigned long)st.st_gid);
}

int
admin_listen(struct daemon *d)
{
    int rc;

    /* as the socket is made (a reload does not change it) */
    const struct cp_group *rg = &d->admin_readers;

    d->admin_readers = d->cfg->admin_read_group;
    if (server_unix_bind(d->loop, &d->admin, d->cfg->admin_socket,
                         rg->set ? 0660 : 0600) < 0)
        return -1;
    if (rg->set && chown(d->cfg->admin_socket, (uid_t)-1, rg->gid) < 0) {
        /* started unprivileged (the systemd unit) by a user outside the
         * group: the desk keeps its socket; the readers wait for a fix */
        msg_error("daemon.admin_read_group: cannot give %s to group %lu "
                  "(%s): the socket stays root's and the daemon's only "
                  "(mode 0600); make the daemon's user a member of the "
                  "group (usermod -aG GROUP chokepoint) and restart",
                  d->cfg->admin_socket, (unsigned long)rg->gid,
                  strerror(errno));
        if (chmod(d->cfg->admin_socket, 0600) < 0)
            return -1;
        d->admin_readers.set = false;
    }
    if (rg->set)
        reader_reach(d->cfg->admin_socket, rg->gid);
    d->admin.data = d;
    d->admin_open = true;
    d->admin_path = xstrdup(d->cfg->admin_socket);
    if ((rc = uv_listen((uv_stream_t *)&d->admin, 16, on_connection)) < 0) {
        msg_error("listen %s: %s", d->cfg->admin_socket, uv_strerror(rc));
        return -1;
    }
    return 0;
}

void
admin_close(struct daemon *d)
{
    if (d->admin_open && !uv_is_closing((uv_handle_t *)&d->admin)) {
        uv_close((uv_handle_t *)&d->admin, NULL);
        d->admin_open = false;
        unlink(d->admin_path);
    }
    free(d->admin_path);
    d->admin_path = NULL;
}
