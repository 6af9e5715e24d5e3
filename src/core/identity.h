/*
 * identity.h — who is sending: turn a policy request into the account that
 * is charged for it. SASL login first (mapped to its customer if the map
 * lists it), else the client address (mapped by network, else truncated to
 * identity.ipv4_prefix / ipv6_prefix). Never an empty key.
 *
 * Keys: "c:<customer>" for mapped customers, "u:<login>" for unmapped
 * logins, "ip:<network>/<len>" for unauthenticated mail. Logins longer than
 * CP_KEY_MAX - 3 bytes are keyed by "u#<hash>" so keys stay bounded.
 */
#ifndef CP_CORE_IDENTITY_H
#define CP_CORE_IDENTITY_H

#include <stddef.h>

#include "core/config.h"
#include "core/policy.h"
#include "core/store.h"

enum cp_ident_kind { CP_ID_SASL, CP_ID_ADDR };

struct cp_identity {
    enum cp_ident_kind kind;
    char key[CP_KEY_MAX];
    size_t keylen;
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
                        const struct policy_request *req,
                        struct cp_identity *out);

/*
 * Resolve what an operator typed: an account key ("c:…", "u:…", "ip:…"),
 * an IP address, or a SASL login. Returns 0 or -1 (unknown customer id).
 */
int cp_identity_lookup(const struct cp_config *cfg, const char *s, size_t len,
                       struct cp_identity *out);

#endif
