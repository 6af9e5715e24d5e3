/*
 * policy.h — codec for the Postfix SMTP access policy delegation protocol
 * (SMTPD_POLICY_README): requests are "name=value\n" lines ended by an empty
 * line; replies are "action=...\n\n".
 *
 * The parser is pure and resumable: feed it bytes split anywhere, it copies
 * at most `max_request` bytes of the current request into its own buffer and
 * reports a complete request or a named limit violation. It does no I/O and
 * no logging and never relies on a NUL terminator in the input.
 *
 * Trust: everything here is peer data. Limits (doc/design.md):
 *   max_line       bytes in one line, without the newline
 *   max_attributes lines in one request
 *   max_request    bytes in one request, newlines included
 */
#ifndef CP_CORE_POLICY_H
#define CP_CORE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/event.h"
#include "util/str.h"
#include "util/strbuf.h"

#define POLICY_HARD_MAX_ATTRIBUTES 1024
#define POLICY_HARD_MAX_REQUEST (1024 * 1024)

struct policy_limits {
    size_t max_line;
    size_t max_attributes;
    size_t max_request;
};

enum policy_status {
    POLICY_NEED_MORE = 0,   /* all input consumed, request incomplete */
    POLICY_REQUEST,         /* a request is complete; see policy_parser */
    POLICY_ERR_LINE,        /* a line longer than max_line */
    POLICY_ERR_ATTRIBUTES,  /* more than max_attributes lines */
    POLICY_ERR_REQUEST,     /* more than max_request bytes */
    POLICY_ERR_SYNTAX,      /* a line without '=' or with an empty name */
};

struct policy_attr {
    struct str name, value;
};

/* The attributes chokepoint uses; the others are accepted and ignored. */
struct policy_request {
    struct str request, protocol_state, protocol_name;
    struct str client_address, client_name, helo_name;
    struct str sender, recipient, recipient_count, size;
    struct str instance, queue_id, sasl_method, sasl_username;
    struct str encryption_protocol, encryption_cipher, server_port;
};

struct policy_parser {
    struct policy_limits lim;
    char *buf;          /* the current request's bytes, max_request capacity */
    size_t len;         /* bytes in buf */
    size_t line_start;  /* offset of the current (incomplete) line */
    struct policy_attr *attrs;
    size_t nattrs;
    bool complete;      /* last feed returned POLICY_REQUEST */
};

/* Limits are copied; they must be within the hard maxima above. */
void policy_parser_init(struct policy_parser *p,
                        const struct policy_limits *lim);
void policy_parser_fini(struct policy_parser *p);
/* True if bytes of an unfinished request are buffered. */
bool policy_parser_pending(const struct policy_parser *p);

/*
 * Consume input. Returns POLICY_REQUEST as soon as one request is complete,
 * with *consumed telling how much of `data` was used (call again with the
 * rest: pipelined requests are returned one at a time, in order). The
 * request's attributes (p->attrs, p->nattrs) stay valid until the next call.
 * After an error the parser must not be fed again (close the connection).
 */
enum policy_status policy_feed(struct policy_parser *p, const char *data,
                               size_t len, size_t *consumed);

/* Fill `req` from the attributes of the last complete request. */
void policy_request_get(const struct policy_parser *p,
                        struct policy_request *req);

/*
 * The engine's event for a request (its strings point into the request's
 * bytes). Returns NULL, or the name of the first numeric attribute that is
 * present but not a decimal number within its range ("size",
 * "recipient_count"; *bad is its value): such a request is not decided.
 * An absent number is 0 (an older MTA).
 */
const char *policy_event(const struct policy_request *req,
                         struct cp_event *ev, struct str *bad);

/* The bytes of the line being parsed (after an error: the bad line). */
void policy_parser_excerpt(const struct policy_parser *p, const char **s,
                           size_t *len);

/* Short, fixed description of an error status, for logs. */
const char *policy_status_str(enum policy_status st);

/*
 * Append "action=<action>[ <text>]\n\n" to `out`. Any byte of `action` or
 * `text` that could break the framing (CR, LF, other controls) is replaced
 * with a space, so no input can inject a second line or a second reply.
 */
void policy_format_reply(struct strbuf *out, const char *action,
                         const char *text);

#endif
