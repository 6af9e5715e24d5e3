/* explain.c — see explain.h. */
#include "core/explain.h"

#include "core/lifecycle.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* A member after the first (every one here follows "schema"). */
static void
json_str(struct strbuf *sb, const char *name, const char *v)
{
    sb_json_kcstr(sb, name, v, false);
}

/* A request value, cut at EXPLAIN_MAX_FIELD bytes. */
static void
json_field(struct strbuf *sb, const char *name, struct str v)
{
    sb_json_kstr(sb, name, v.p,
                 v.len > EXPLAIN_MAX_FIELD ? EXPLAIN_MAX_FIELD : v.len, false);
}

void
cp_explain_json(struct strbuf *sb, const struct cp_decision *d,
                const struct cp_event *ev, uint64_t incident, int64_t now_ms)
{
    char ts[32], text[CP_TEXT_MAX];

    cp_format_time(ts, sizeof(ts), now_ms);
    sb_json_open(sb, CP_JSON_DECISION);
    json_str(sb, "ts", ts);
    json_str(sb, "stage", cp_stage_name(d->stage));
    json_str(sb, "action", cp_action_word(d->action));
    json_str(sb, "verdict", cp_action_word(d->verdict));
    sb_printf(sb, ",\"shadow\":%s", d->shadow ? "true" : "false");
    sb_puts(sb, ",\"key\":");
    if (d->id.keylen > 0)
        sb_json_str(sb, d->id.key, d->id.keylen);
    else
        sb_puts(sb, "null");
    sb_puts(sb, ",\"account\":");
    if (d->id.dkeylen > 0)
        sb_json_str(sb, d->id.dkey, d->id.dkeylen);
    else
        sb_puts(sb, "null");
    json_str(sb, "identity", d->id.keylen == 0 ? NULL
                             : d->id.kind == CP_ID_SASL ? "sasl"
                                                         : "address");
    json_str(sb, "customer", d->id.cust ? d->id.cust->id : NULL);
    json_str(sb, "class", d->id.cls ? d->id.cls->name : NULL);
    json_field(sb, "sasl_username", ev->sasl_username);
    json_field(sb, "client_address", ev->client_address);
    json_field(sb, "sender", ev->sender);
    json_field(sb, "recipient", ev->recipient);
    json_field(sb, "instance", ev->instance);
    json_field(sb, "queue_id", ev->queue_id);
    if (d->has_rule) {
        json_str(sb, "rule", d->rule.name);
        json_str(sb, "metric", cp_metric_name(d->rule.metric));
        sb_printf(sb, ",\"window_s\":%llu",
                  (unsigned long long)(d->rule.window_ms / 1000));
        sb_puts(sb, ",\"value\":");
        sb_json_num(sb, d->value);
        sb_puts(sb, ",\"cost\":");
        sb_json_num(sb, d->cost);
        sb_puts(sb, ",\"limit\":");
        sb_json_num(sb, d->limit);
        sb_puts(sb, ",\"retry_s\":");
        sb_json_num(sb, d->retry_s);
        json_str(sb, "text", cp_reply_text(d, text, sizeof(text)));
    } else {
        sb_puts(sb, ",\"rule\":null");
        if (d->by_state || (d->stage == CP_STAGE_CONTENT && d->text[0]))
            json_str(sb, "text", cp_reply_text(d, text, sizeof(text)));
        if (d->stage == CP_STAGE_CONTENT) {
            /* accounts that sent this text: a count */
            sb_json_ku64(sb, "text_accounts", (uint64_t)d->value, false);
        }
    }
    if (d->cust_state != 0)
        json_str(sb, "customer_state",
                 cp_state_name((enum cp_state)d->cust_state));
    if (d->detected || d->state_changed || d->state != 0) {
        json_str(sb, "state", cp_state_name((enum cp_state)d->state));
        if (d->state_changed)
            json_str(sb, "previous_state",
                     cp_state_name((enum cp_state)d->prev_state));
        if (d->state_changed && incident > 0)
            sb_json_ku64(sb, "incident", incident, false);
        sb_puts(sb, ",\"score\":");
        sb_json_num(sb, d->score);
        sb_puts(sb, ",\"signals\":[");
        for (int i = 0, n = 0; i < CP_SIG_COUNT; i++)
            if (d->fired & (1u << i))
                sb_printf(sb, "%s\"%s\"", n++ ? "," : "",
                          cp_signal_name((enum cp_signal)i));
        sb_puts(sb, "]");
    }
    sb_puts(sb, "}");
}

void
cp_explain_text(struct strbuf *sb, const struct cp_decision *d,
                const struct cp_event *ev, uint64_t incident)
{
    char login[EXPLAIN_MAX_FIELD * 4 + 4], client[64], inst[64];
    char key[CP_KEY_MAX * 4 + 4], acct[CP_KEY_MAX * 4 + 4];

    str_escape(login, sizeof(login), ev->sasl_username.p ? ev->sasl_username.p
                                                          : "",
               ev->sasl_username.len, EXPLAIN_MAX_FIELD);
    str_escape(client, sizeof(client),
               ev->client_address.p ? ev->client_address.p : "",
               ev->client_address.len, 46);
    str_escape(inst, sizeof(inst), ev->instance.p ? ev->instance.p : "",
               ev->instance.len, 40);
    str_escape(key, sizeof(key), d->id.key, d->id.keylen, CP_KEY_MAX);
    str_escape(acct, sizeof(acct), d->id.dkey, d->id.dkeylen, CP_KEY_MAX);
    sb_printf(sb, "%s%s: stage=%s key=%s%s%s class=%s login=%s client=%s "
                  "instance=%s",
              d->shadow ? "shadow " : "",
              d->shadow ? cp_action_word(d->verdict) : cp_action_word(d->action),
              cp_stage_name(d->stage), key[0] ? key : "-",
              cp_identity_one_record(&d->id) ? "" : " account=",
              cp_identity_one_record(&d->id) ? "" : acct,
              d->id.cls ? d->id.cls->name : "-", login[0] ? login : "-",
              client, inst);
    if (d->has_rule)
        sb_printf(sb, " rule=%s value=%.2f cost=%.0f limit=%.0f retry=%.0fs",
                  d->rule.name, d->value, d->cost, d->limit, d->retry_s);
    if (d->state_changed) {
        sb_printf(sb, " state=%s->%s",
                  cp_state_name((enum cp_state)d->prev_state),
                  cp_state_name((enum cp_state)d->state));
        if (incident > 0)
            sb_printf(sb, " incident=%llu", (unsigned long long)incident);
    } else if (d->state != 0)
        sb_printf(sb, " state=%s", cp_state_name((enum cp_state)d->state));
    if (d->cust_state != 0)
        sb_printf(sb, " customer_state=%s",
                  cp_state_name((enum cp_state)d->cust_state));
    if (d->detected)
        sb_printf(sb, " score=%.1f", d->score);
    if (d->stage == CP_STAGE_CONTENT)
        sb_printf(sb, " text_accounts=%.0f", d->value);
}
