/*
 * notice.h — the notifications of an account's state change (an
 * "incident"): when it is blocked, a mail to the customer's contact
 * address, an ARF abuse report (RFC 5965, RFC 6650) for the abuse desk or
 * a feedback loop, and the JSON body of the webhook; when it is released,
 * a mail to the customer and the webhook's "released" event.
 *
 * Two audiences: the customer's mail is written for a home user and never
 * carries the abuse desk's internal note (`reason`) or raw scores
 * (`evidence`); it says what was seen in plain words (one phrase per
 * signal kind) and what the desk chose to tell the customer (`message`).
 * The ARF report and the webhook are the ISP's own and carry everything.
 *
 * Pure: renders into a strbuf; no I/O, no clock (dates come from the
 * incident's `at_ms`), no logging. The caller delivers the result.
 *
 * Trust: every incident field is untrusted text (account names come from
 * SASL logins, the note and message from the abuse desk, the envelope
 * from the client). In headers a field becomes printable ASCII on one line:
 * control characters (CR, LF, TAB, ...) turn into a space, runs of spaces
 * collapse, and each non-ASCII character (or byte that is not UTF-8)
 * becomes '?'. We replace rather than RFC 2047-encode: it is simple, can
 * never produce a malformed encoded-word, and the exact text is in the
 * body anyway. The one exception is the customer mail's Subject, which a
 * localised template writes for people: if it is not ASCII it is sent as
 * RFC 2047 "B" encoded-words of whole UTF-8 characters. A header value
 * is cut at NOTICE_MAX_HEADER bytes ("...") and folded at spaces near 78
 * columns, so no line exceeds RFC 5322's 998.
 * In bodies a field stays UTF-8 but on one line: controls and Unicode line
 * or bidi-override characters become a space, bytes that are not UTF-8 a
 * '?', and it is cut at NOTICE_MAX_VALUE bytes ("..."); body lines longer
 * than NOTICE_MAX_LINE octets are broken. Addresses (`from`, `to`, the
 * contact) and `reporting_mta` are not rewritten: one that is unsafe in a
 * header is an error, so a notice never goes to a mangled address.
 *
 * Messages use "\n" line endings, for `sendmail -i` (which converts). The
 * caller must pass -i (or -oi): a template line holding a single "." would
 * otherwise end the message early. Prefer explicit recipients
 * (`sendmail -i -f FROM -- TO`) to -t.
 *
 * Time: {{time}} in the customer's mail is the host's local time with its
 * zone named ("2026-11-23 17:40 CET": localtime_r, so TZ or
 * /etc/localtime); headers and the ARF report use UTC.
 *
 * Thread: any; nothing is shared.
 */
#ifndef CP_CORE_NOTICE_H
#define CP_CORE_NOTICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "util/strbuf.h"

#define NOTICE_MAX_VALUE 1000     /* bytes of one field in a body or JSON */
#define NOTICE_MAX_HEADER 900     /* bytes of one header value */
#define NOTICE_MAX_ADDR 512       /* bytes of from / to / contact */
#define NOTICE_MAX_LINE 998       /* octets per line (RFC 5322 2.1.1) */
#define NOTICE_MAX_TEMPLATE 65536 /* bytes of a customer template */

struct cp_incident {
    uint64_t id;            /* incident number, unique per daemon DB: the
                               number of the change that blocked the
                               account (a release quotes its block's) */
    uint64_t change;        /* the number of this state change; 0: `id`
                               (a block is its own incident) */
    const char *account;    /* account key, "u:alice@example.net" ... */
    const char *customer;   /* customer id from the customer map, or NULL */
    const char *contact;    /* customer's contact address, or NULL */
    const char *state;      /* "BLOCKED", "THROTTLED", "MANUAL_HOLD" */
    const char *prev_state; /* or NULL */
    int64_t at_ms;          /* when, ms since epoch (UTC) */
    double score;
    const char *evidence;      /* one line: "score 12.3: forged_sender ..."
                                  (abuse desk and webhook only) */
    const char *reason;        /* "automatic" or the abuse desk's internal
                                  note (never in the customer's mail) */
    const char *actor;         /* who decided: "auto" (the evidence) or
                                  the person, "jane.doe (uid 0)"; NULL:
                                  unknown (never in the customer's mail) */
    const char *message;       /* what the abuse desk tells the customer
                                  (--tell), or NULL */
    const char *const *logins; /* the logins whose mail is stopped, as the
                                  customer knows them; NULL: the account
                                  key without its prefix */
    size_t nlogins;
    uint8_t signals[CP_SIG_COUNT]; /* enum cp_signal behind it, strongest
                                      first (the customer's "what we saw") */
    size_t nsignals;
    bool released;             /* a release: the account may send again */
    const char *client_addr;   /* last client IP address seen, or NULL */
    const char *helo;          /* or NULL */
    const char *sample_sender; /* the last message's envelope, or NULL */
    const char *sample_recipient; /* or NULL */
    const char *help_url;         /* may be "" or NULL */
    const char *reporting_mta;    /* our host name, "smtp.isp.example" */
};

/*
 * The RFC 5322 message to the customer's contact address (From: `from`),
 * text/plain UTF-8, 8bit, rendered from `tmpl` (NULL: the built-in English
 * template, written for a home user: the block notice, or the release
 * notice if `in->released`, worded for the state released into:
 * PROBATION, ALLOWED or another). Without a help_url the built-in text
 * asks the customer to reply (to `from`). Never names `actor`, `reason`
 * or `evidence`. Appended to `out`.
 *
 * Template placeholders (spaces inside the braces are allowed):
 *   {{logins}}   the login(s) whose mail is stopped, comma-separated
 *                (in->logins, else the key without "u:"/"c:"/"ip:")
 *   {{account}}  the same (kept for templates written before {{logins}})
 *   {{seen}}     what was seen, in plain words: one "- phrase" line per
 *                signal kind (no newline after the last); "" if none
 *   {{evidence}} the same phrases on one line, separated by "; "
 *   {{message}}  what the abuse desk tells the customer (--tell), or ""
 *   {{reason}}   the same as {{message}}: the internal note never reaches
 *                the customer
 *   {{time}}     local time with the zone: "2026-11-23 17:40 CET"
 *   {{customer}} {{state}} {{client}} {{help_url}} {{incident}}
 * A NULL field renders as "". If the first line starts with "Subject:",
 * it is the subject template (placeholders allowed) and one blank line
 * after it is skipped; otherwise the subject is the English default for
 * the state. CRLF line endings and a leading byte order mark are accepted.
 *
 * Headers: From, To, Subject, Date (the incident time), Message-ID
 * <chokepoint.ID.AT_MS.customer@reporting_mta>, MIME-Version,
 * Content-Type, Content-Transfer-Encoding, Auto-Submitted: auto-generated,
 * X-Chokepoint-Incident, X-Chokepoint-Account.
 *
 * Returns 0, or -1 with a reason in err[CP_ERR_MAX] (no account, no or an
 * unsafe contact/from address, bad reporting_mta, bad template); on -1
 * `out` is left as it was.
 */
int cp_notice_customer(const struct cp_incident *in, const char *from,
                       const char *tmpl, struct strbuf *out, char *err);

/*
 * Check a customer template without rendering (config load). It must be
 * UTF-8, at most NOTICE_MAX_TEMPLATE bytes, without control characters
 * other than TAB, LF and CR before LF, and use known, closed placeholders.
 * Returns 0, or -1 with err[CP_ERR_MAX] like "unknown placeholder {{x}} at
 * offset N". Does not need a NUL terminator.
 */
int cp_notice_template_check(const char *tmpl, size_t len, char *err);

/*
 * An RFC 5965 ARF report, Feedback-Type: abuse, from `from` to `to`,
 * appended to `out`: multipart/report; report-type=feedback-report with
 *   1. text/plain (UTF-8, 8bit): a human summary of the incident (with
 *      who decided, `actor`), saying that the policy stage never sees
 *      message bodies;
 *   2. message/feedback-report: Feedback-Type, User-Agent
 *      (chokepoint/VERSION), Version: 1, Original-Mail-From and
 *      Original-Rcpt-To (when the last envelope is known), Arrival-Date
 *      (the incident time), Reporting-MTA: dns; HOST, Source-IP (when
 *      client_addr is an IP address: the customer's machine), and
 *      Reported-Domain: the domain of the abused login when the login is
 *      an address, never the envelope sender's (forged: the victim's). No
 *      Incidents field: the incident carries no message count.
 *   3. text/rfc822-headers: the last envelope written as headers
 *      (Return-Path, a Received line built from HELO and client address,
 *      X-Envelope-To), marked as reconstructed; with no envelope at all
 *      (a person's hold of an account with no message at hand) only the
 *      account and incident, and a note saying no envelope was seen (RFC
 *      5965 2 requires the part).
 * The boundary is "=_chokepoint_ID_AT_MS_N", N the first salt whose
 * boundary occurs in none of the parts. Message-ID
 * <chokepoint.ID.AT_MS.arf@reporting_mta>. Returns 0, or -1 with
 * err[CP_ERR_MAX]; on -1 `out` is left as it was.
 */
int cp_notice_arf(const struct cp_incident *in, const char *from,
                  const char *to, struct strbuf *out, char *err);

/*
 * The webhook body, appended to `out`: one JSON object
 * {"event":"incident","incident":ID,"change":CHANGE,"account":..,
 * "customer":..,"state":..,"previous_state":..,
 * "time":"2026-11-23T16:40:01.123Z","score":..,"evidence":..,"reason":..,
 * "actor":..,"message":..,"logins":[..],"signals":[..],"client":..,
 * "help_url":..}; "event" is "released" for a release, whose "incident"
 * is the block's and "change" its own (CHANGE is in->change, or ID if
 * 0). `reason` is the internal note (or "automatic"), `actor` who
 * decided, `message` what the customer was told (null: nothing of the
 * desk's own), `signals` the signal names. NULL fields as null, strings cut at NOTICE_MAX_VALUE bytes
 * ("..."). No newline.
 */
void cp_notice_webhook(const struct cp_incident *in, struct strbuf *out);

#endif
