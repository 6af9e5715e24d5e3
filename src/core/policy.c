/*
 * policy.c — Postfix policy protocol codec; see policy.h for the contract.
 *
 * Design: bytes are copied into a per-connection buffer of max_request bytes
 * (allocated once), lines are split as they arrive, and the attributes point
 * into that buffer. A request therefore costs no allocation after the first.
 * A trailing CR is tolerated (some non-Postfix clients send CRLF); it counts
 * towards max_line.
 */
#include "core/policy.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "util/msg.h"
#include "util/parse.h"
#include "util/xalloc.h"

void
policy_parser_init(struct policy_parser *p, const struct policy_limits *lim)
{
    if (lim->max_request == 0 || lim->max_request > POLICY_HARD_MAX_REQUEST ||
        lim->max_attributes == 0 ||
        lim->max_attributes > POLICY_HARD_MAX_ATTRIBUTES ||
        lim->max_line == 0)
        msg_panic("policy_parser_init: limits out of range");
    memset(p, 0, sizeof(*p));
    p->lim = *lim;
    p->buf = xmalloc(lim->max_request);
    p->attrs = xcalloc(lim->max_attributes, sizeof(*p->attrs));
}

void
policy_parser_fini(struct policy_parser *p)
{
    free(p->buf);
    free(p->attrs);
    memset(p, 0, sizeof(*p));
}

bool
policy_parser_pending(const struct policy_parser *p)
{
    return !p->complete && p->len > 0;
}

/* A complete line buf[line_start, end) without its newline. */
static enum policy_status
policy_line(struct policy_parser *p, size_t end)
{
    char *line = p->buf + p->line_start;
    size_t len = end - p->line_start;
    char *eq;
    struct policy_attr *a;

    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len == 0)
        return POLICY_REQUEST;
    if (p->nattrs >= p->lim.max_attributes)
        return POLICY_ERR_ATTRIBUTES;
    eq = memchr(line, '=', len);
    if (eq == NULL || eq == line)
        return POLICY_ERR_SYNTAX;
    a = &p->attrs[p->nattrs++];
    a->name.p = line;
    a->name.len = (size_t)(eq - line);
    a->value.p = eq + 1;
    a->value.len = len - a->name.len - 1;
    return POLICY_NEED_MORE;
}

enum policy_status
policy_feed(struct policy_parser *p, const char *data, size_t len,
            size_t *consumed)
{
    size_t i = 0;
    enum policy_status st;

    if (p->complete) {
        p->len = p->line_start = p->nattrs = 0;
        p->complete = false;
    }
    while (i < len) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t take = nl ? (size_t)(nl - (data + i)) + 1 : len - i;
        size_t content = p->len - p->line_start + take - (nl ? 1 : 0);

        if (content > p->lim.max_line) {
            *consumed = i;
            return POLICY_ERR_LINE;
        }
        if (take > p->lim.max_request - p->len) {
            *consumed = i;
            return POLICY_ERR_REQUEST;
        }
        memcpy(p->buf + p->len, data + i, take);
        p->len += take;
        i += take;
        if (!nl)
            break;
        st = policy_line(p, p->len - 1);
        if (st != POLICY_NEED_MORE) {
            *consumed = i;
            p->complete = (st == POLICY_REQUEST);
            return st;
        }
        p->line_start = p->len;
    }
    *consumed = i;
    return POLICY_NEED_MORE;
}

static enum cp_stage
stage_of(struct str state)
{
    if (str_eq(state, "RCPT"))
        return CP_STAGE_RCPT;
    if (str_eq(state, "DATA"))
        return CP_STAGE_DATA;
    if (str_eq(state, "END-OF-MESSAGE"))
        return CP_STAGE_EOM;
    return CP_STAGE_OTHER;
}

/* A numeric attribute: absent is 0; false if not a number up to max. */
static bool
number(struct str s, uint64_t max, uint64_t *v)
{
    *v = 0;
    return s.p == NULL || (parse_u64(s.p, s.len, v) && *v <= max);
}

const char *
policy_event(const struct policy_request *req, struct cp_event *ev,
             struct str *bad)
{
    memset(ev, 0, sizeof(*ev));
    ev->stage = stage_of(req->protocol_state);
    ev->sasl_username = req->sasl_username;
    ev->client_address = req->client_address;
    ev->helo_name = req->helo_name;
    ev->sender = req->sender;
    ev->recipient = req->recipient;
    ev->instance = req->instance;
    ev->queue_id = req->queue_id;
    ev->tls_protocol = req->encryption_protocol;
    ev->tls_cipher = req->encryption_cipher;
    if (!number(req->size, CP_MAX_SIZE, &ev->size)) {
        *bad = req->size;
        return "size";
    }
    if (!number(req->recipient_count, CP_MAX_RECIPIENTS,
                &ev->recipient_count)) {
        *bad = req->recipient_count;
        return "recipient_count";
    }
    return NULL;
}

void
policy_request_get(const struct policy_parser *p, struct policy_request *req)
{
    static const struct {
        const char *name;
        size_t len;
        size_t off;
    } fields[] = {
#define F(n) {#n, sizeof(#n) - 1, offsetof(struct policy_request, n)}
        F(request),         F(protocol_state),  F(protocol_name),
        F(client_address),  F(client_name),     F(helo_name),
        F(sender),          F(recipient),       F(recipient_count),
        F(size),            F(instance),        F(queue_id),
        F(sasl_method),     F(sasl_username),   F(encryption_protocol),
        F(encryption_cipher), F(server_port),
#undef F
    };
    size_t i, j;

    memset(req, 0, sizeof(*req));
    for (i = 0; i < p->nattrs; i++) {
        for (j = 0; j < sizeof(fields) / sizeof(fields[0]); j++) {
            const struct str *nm = &p->attrs[i].name;

            if (nm->len == fields[j].len &&
                memcmp(nm->p, fields[j].name, nm->len) == 0) {
                *(struct str *)((char *)req + fields[j].off) =
                    p->attrs[i].value;
                break;
            }
        }
    }
}

void
policy_parser_excerpt(const struct policy_parser *p, const char **s,
                      size_t *len)
{
    *s = p->buf + p->line_start;
    *len = p->len - p->line_start;
}

const char *
policy_status_str(enum policy_status st)
{
    switch (st) {
    case POLICY_NEED_MORE:
        return "incomplete request";
    case POLICY_REQUEST:
        return "request";
    case POLICY_ERR_LINE:
        return "line longer than protocol.max_line";
    case POLICY_ERR_ATTRIBUTES:
        return "more attributes than protocol.max_attributes";
    case POLICY_ERR_REQUEST:
        return "request larger than protocol.max_request";
    case POLICY_ERR_SYNTAX:
        return "line is not name=value";
    }
    return "unknown status";
}

static void
append_clean(struct strbuf *out, const char *s)
{
    size_t start = out->len, i;

    sb_puts(out, s);
    for (i = start; i < out->len; i++) {
        unsigned char c = (unsigned char)out->data[i];

        if (c < 0x20 || c >= 0x7f) /* replies are 7-bit printable */
            out->data[i] = c >= 0x80 ? '?' : ' ';
    }
}

void
policy_format_reply(struct strbuf *out, const char *action, const char *text)
{
    sb_puts(out, "action=");
    append_clean(out, action);
    if (text != NULL && text[0] != '\0') {
        sb_puts(out, " ");
        append_clean(out, text);
    }
    sb_puts(out, "\n\n");
}
