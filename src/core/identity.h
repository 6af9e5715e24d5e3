/*
 * identity.h — who is sending: turn an event (core/event.h) into the
 * account that is charged for it. SASL login first (mapped to its customer if the map
 * lists it), else the client address (mapped by network, else truncated to
 * identity.ipv4_prefix / ipv6_prefix). Never an empty key.
 *
 * Two keys (doc/detection.md, "Per login"): limits are per customer, the
 * evidence and the account state per credential.
 *   key   the counters: "c:<customer>" for mapped customers, "u:<login>"
 *         for unmapped logins, "ip:<network>/<len>" for unauthenticated
 *         mail;
 *   dkey  the evidence and state: "u:<login>" for every SASL login (mapped
 *         or not), "ip:<network>/<len>" (identity.ipv4_prefix /
 *         ipv6_prefix) for mail without one, even from a mapped network.
 *         An operator's "c:<customer>" names the customer's own record
 *         (key and dkey alike): its manual state covers all its logins.
 * For an unmapped login or address the two are the same record. Logins
 * longer than CP_KEY_MAX - 3 bytes are keyed by "u#<hash>" so keys stay
 * bounded.
 */
#ifndef CP_CORE_IDENTITY_H
#define CP_CORE_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "core/policy.h"
#include "core/store.h"

enum cp_ident_kind { CP_ID_SASL, CP_ID_ADDR };

struct cp_identity {
    enum cp_ident_kind kind;
    char key[CP_KEY_MAX];
    size_t keylen;
    char dkey[CP_KEY_MAX];
    size_t dkeylen;
    const struct cp_customer *cust; /* NULL if not in the map */
    const struct cp_class *cls;
    const struct cp_ruleset *rules;
};

/*
 * Resolve. Returns 0, or -1 if the request has neither a SASL login nor a
 * parseable client address (a peer error: the caller logs and answers
 * DUNNO).
 */
int cp_identity_resolve(const struct cp_config *cfg,
                        const struct cp_event *ev,
                        struct cp_identity *out);

/*
 * Resolve what an operator typed: an account key ("c:…", "u:…", "ip:…"),
 * an IP address, or a SASL login. Returns 0 or -1 (unknown customer id).
 */
int cp_identity_lookup(const struct cp_config *cfg, const char *s, size_t len,
                       struct cp_identity *out);

/* Do the counters and the state live in one record (an unmapped login or
 * address, or an operator's customer)? */
static inline bool
cp_identity_one_record(const struct cp_identity *id)
{
    return id->keylen == id->dkeylen &&
           __builtin_memcmp(id->key, id->dkey, id->keylen) == 0;
}

#endif
