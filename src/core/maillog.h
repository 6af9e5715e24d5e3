/*
 * maillog.h — a Postfix mail.log reader for `chokepoint replay`: a framer
 * that cuts a byte stream into lines, and a parser that turns one line into
 * one event (who submitted a queue id, its sender, size and recipient
 * count, its deliveries, its removal, rejects).
 *
 * Both are pure: no I/O, no logging, no allocation, no NUL terminator
 * needed. Event values point into the line (valid while the line is). The
 * only state that crosses lines is the year of classic syslog timestamps
 * (struct maillog_ctx), which carry none.
 *
 * Accepted line shape, as written by syslog daemons and Postfix's own
 * maillog_file:
 *
 *   [<PRI>]TIMESTAMP HOST SERVICE[PID]: TEXT
 *
 * TIMESTAMP is classic syslog "Nov 23 16:03:30" (optionally with a
 * fraction, ".123456"), or RFC 3339 "2026-11-23T16:03:30.123456+00:00"
 * (Z, +hh:mm or +hhmm). SERVICE is Postfix's syslog_name and daemon,
 * e.g. "postfix/smtpd", "postfix/submission/smtpd", "postfix-out/qmgr".
 *
 * Trust: the log is written by Postfix but carries client-controlled text
 * (logins, addresses, reply texts); every field is bounded by the line and
 * every number is overflow-checked. Limits (doc/design.md, doc/replay.md):
 *   MAILLOG_MAX_LINE      bytes of one line; longer lines are skipped
 *   MAILLOG_MAX_QUEUE_ID  bytes of a queue id (Postfix's are <= 17)
 */
#ifndef CP_CORE_MAILLOG_H
#define CP_CORE_MAILLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/str.h"

#define MAILLOG_MAX_LINE 8192 /* rsyslog's default maxMessageSize */
#define MAILLOG_MAX_QUEUE_ID 32

enum maillog_kind {
    MAILLOG_UNKNOWN,       /* no syslog header, or a known record malformed */
    MAILLOG_OTHER,         /* a well-formed line replay does not use */
    MAILLOG_SMTPD_CLIENT,  /* smtpd  QID: client=NAME[ADDR], sasl_... */
    MAILLOG_PICKUP,        /* pickup QID: uid=N from=<...> (local mail) */
    MAILLOG_CLEANUP_MSGID, /* cleanup QID: message-id=<...> */
    MAILLOG_QMGR_FROM,     /* qmgr   QID: from=<...>, size=N, nrcpt=N */
    MAILLOG_DELIVERY,      /* any    QID: to=<...>, relay=..., status=... */
    MAILLOG_QMGR_REMOVED,  /* qmgr   QID: removed */
    MAILLOG_NOTIFICATION,  /* bounce QID: sender ... notification: NEWQID */
    MAILLOG_REJECT,        /* NOQUEUE|QID: reject:|milter-reject: STAGE ... */
    MAILLOG_SMTPD_CONNECT, /* smtpd  connect from NAME[ADDR] */
    MAILLOG_SMTPD_TLS,     /* smtpd  ... TLS connection established from
                              NAME[ADDR]: PROTOCOL with cipher CIPHER ... */
    MAILLOG_KIND_COUNT
};

struct maillog_event {
    enum maillog_kind kind;
    bool has_time; /* false only for MAILLOG_UNKNOWN */
    int64_t ts_ms; /* ms since the epoch (see maillog_parse) */
    struct str host;
    struct str service;  /* "postfix/submission/smtpd" */
    struct str instance; /* "postfix", "postfix-out" */
    struct str program;  /* "smtpd" */
    struct str pid;      /* "12345"; absent if not given */
    struct str queue_id; /* absent for NOQUEUE */
    /* MAILLOG_SMTPD_CLIENT */
    struct str client_name, client_addr;
    struct str sasl_method, sasl_username; /* absent if not given */
    struct str orig_queue_id; /* set: re-injected by a filter */
    /* MAILLOG_CLEANUP_MSGID */
    struct str message_id;
    /* MAILLOG_QMGR_FROM, MAILLOG_PICKUP: sender without <>, may be empty */
    struct str from;
    uint64_t size, nrcpt;
    /* MAILLOG_DELIVERY: recipient without <>; status is one word */
    struct str to, relay, dsn, status;
    /* MAILLOG_NOTIFICATION: the queue id of the notification message */
    struct str new_queue_id;
    /* MAILLOG_SMTPD_CONNECT, MAILLOG_SMTPD_TLS: the client (as for
     * MAILLOG_SMTPD_CLIENT); TLS: the protocol and cipher negotiated */
    struct str tls_protocol, tls_cipher;
    /* MAILLOG_REJECT: "RCPT", "END-OF-MESSAGE", "header", ... */
    struct str reject_stage;
};

/* What crosses lines: the year of classic timestamps. */
struct maillog_ctx {
    int year;       /* year of the current classic timestamps; 0: not yet */
    int64_t now_ms; /* reference for the first guess (see maillog_ctx_init) */
    int last_mon;   /* month (0-11) of the last timestamp; -1: none */
};

/*
 * `year` > 0: classic timestamps start in that year. `year` == 0: the year
 * of `now_ms`, or the year before if the first classic timestamp would
 * then lie more than a day after `now_ms` (a December log read in
 * January). Either way a month that goes back by six or more (December
 * to January) starts the next year.
 */
void maillog_ctx_init(struct maillog_ctx *c, int year, int64_t now_ms);

/*
 * Parse one line (without its newline; a trailing CR is ignored). Fills
 * *ev and returns ev->kind. Classic timestamps carry no zone and are read
 * as UTC (the log's own wall clock); RFC 3339 ones are converted to UTC.
 * Never fails: what it cannot read is MAILLOG_UNKNOWN.
 */
enum maillog_kind maillog_parse(struct maillog_ctx *c, const char *line,
                                size_t len, struct maillog_event *ev);

/* "smtpd_client", "qmgr_from", ... (for reports and tests). */
const char *maillog_kind_name(enum maillog_kind k);

/* ---- framing: bytes → lines, with a bounded buffer ---- */

enum maillog_frame {
    MAILLOG_NEED_MORE, /* all input consumed, no complete line */
    MAILLOG_LINE,      /* *line, *linelen: one line without newline/CR */
    MAILLOG_TOO_LONG,  /* a line over MAILLOG_MAX_LINE: skipped (once) */
};

struct maillog_framer {
    size_t len;    /* bytes of an unfinished line in buf */
    bool skipping; /* inside a line that was too long */
    char buf[MAILLOG_MAX_LINE];
};

void maillog_framer_init(struct maillog_framer *f);
/*
 * Consume input split anywhere. Returns as soon as one line is complete
 * (or one over-long line has been detected), with *consumed saying how much
 * of `data` was used: call again with the rest. A returned line points into
 * `data` or into the framer and is valid until the next call.
 */
enum maillog_frame maillog_framer_feed(struct maillog_framer *f,
                                       const char *data, size_t len,
                                       size_t *consumed, const char **line,
                                       size_t *linelen);
/* End of input: return a last line that had no newline (or NEED_MORE). */
enum maillog_frame maillog_framer_finish(struct maillog_framer *f,
                                         const char **line, size_t *linelen);

#endif
