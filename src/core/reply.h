/*
 * reply.h — the words of chokepoint's answers, in one place: what each
 * verdict tells the SMTP client (and through it the customer). The engine
 * fills a decision's reply (SMTP code, enhanced status code, text); each
 * protocol formats it for itself: the policy service as "ACTION status
 * text" (Postfix picks the SMTP code), the milter as code, status and
 * text. Not yet configurable (Postfix's reply maps are the model): the
 * wording lives here and nowhere else.
 */
#ifndef CP_CORE_REPLY_H
#define CP_CORE_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

struct cp_decision;

/* A rule's verdict (d->rule, d->verdict, d->retry_s set). */
void cp_reply_limit(struct cp_decision *d);
/* The account's state refuses its mail: BLOCKED or MANUAL_HOLD
 * (d->verdict REJECT or HOLD), THROTTLED (DEFER). */
void cp_reply_blocked(struct cp_decision *d, const struct cp_detection *det);
void cp_reply_throttled(struct cp_decision *d,
                        const struct cp_detection *det);
/* The message is part of a campaign sent from `accounts` accounts. */
void cp_reply_campaign(struct cp_decision *d, uint32_t accounts,
                       const struct cp_detection *det);
/* Mail of a suspect account goes through `transport` (FILTER). */
void cp_reply_pool(struct cp_decision *d, const char *transport);

/* The reply as one line of text (the policy protocol's, the logs'):
 * "4.7.1 words", or the words alone. Returns buf (n bytes: CP_TEXT_MAX). */
const char *cp_reply_text(const struct cp_decision *d, char *buf, size_t n);

#endif
