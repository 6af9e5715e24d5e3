/* identity.c — see identity.h. */
#include "core/identity.h"

#include <stdio.h>
#include <string.h>

#include "core/custmap.h"
#include "util/hmap.h"
#include "util/inet.h"

/* out = prefix + s (bounded: a long s is keyed by its hash). */
static size_t
make_key(char out[CP_KEY_MAX], const char *prefix, const char *s, size_t len)
{
    size_t plen = strlen(prefix);

    if (plen + len >= CP_KEY_MAX)
        return (size_t)snprintf(out, CP_KEY_MAX, "%c#%016llx", prefix[0],
                                (unsigned long long)hmap_hash(s, len));
    memcpy(out, prefix, plen);
    memcpy(out + plen, s, len);
    out[plen + len] = '\0';
    return plen + len;
}

/* The counters' key is the detection key (an unmapped login or address). */
static void
same_keys(struct cp_identity *id)
{
    memcpy(id->key, id->dkey, id->dkeylen + 1);
    id->keylen = id->dkeylen;
}

static void
set_customer(struct cp_identity *id, const struct cp_customer *c)
{
    id->cust = c;
    id->cls = c->cls;
    id->rules = &c->rules;
    id->keylen = make_key(id->key, "c:", c->id, strlen(c->id));
}

static void
from_login(const struct cp_config *cfg, const char *s, size_t len,
           struct cp_identity *id)
{
    const struct cp_customer *c = cp_custmap_login(cfg, s, len);

    id->kind = CP_ID_SASL;
    id->dkeylen = make_key(id->dkey, "u:", s, len);
    if (c != NULL) {
        set_customer(id, c);
        return;
    }
    id->cls = cfg->default_class;
    id->rules = &id->cls->rules;
    same_keys(id);
}

static void
from_addr(const struct cp_config *cfg, const struct inet_addr *addr,
          struct cp_identity *id)
{
    const struct cp_customer *c = cp_custmap_network(cfg, addr);
    struct inet_addr a = *addr;
    unsigned plen = a.family == 4 ? cfg->ipv4_prefix : cfg->ipv6_prefix;
    char net[INET_PREFIX_STRLEN];

    id->kind = CP_ID_ADDR;
    inet_mask(&a, plen);
    inet_format_prefix(net, sizeof(net), &a, plen);
    id->dkeylen = make_key(id->dkey, "ip:", net, strlen(net));
    if (c != NULL) {
        set_customer(id, c);
        return;
    }
    id->cls = cfg->unauth_class;
    id->rules = &id->cls->rules;
    same_keys(id);
}

int
cp_identity_resolve(const struct cp_config *cfg,
                    const struct cp_event *ev, struct cp_identity *out)
{
    struct inet_addr addr;

    memset(out, 0, sizeof(*out));
    if (ev->sasl_username.p != NULL && ev->sasl_username.len > 0) {
        from_login(cfg, ev->sasl_username.p, ev->sasl_username.len, out);
        return 0;
    }
    if (ev->client_address.p == NULL ||
        !inet_parse(ev->client_address.p, ev->client_address.len, &addr))
        return -1;
    from_addr(cfg, &addr, out);
    return 0;
}

int
cp_identity_lookup(const struct cp_config *cfg, const char *s, size_t len,
                   struct cp_identity *out)
{
    struct inet_addr addr;
    unsigned plen;

    memset(out, 0, sizeof(*out));
    if (len > 2 && memcmp(s, "c:", 2) == 0) {
        const struct cp_customer *c = cp_custmap_customer(cfg, s + 2, len - 2);

        if (c == NULL)
            return -1;
        out->kind = CP_ID_SASL;
        set_customer(out, c);
        memcpy(out->dkey, out->key, out->keylen + 1);
        out->dkeylen = out->keylen;
        return 0;
    }
    if (len > 2 && memcmp(s, "u:", 2) == 0) {
        from_login(cfg, s + 2, len - 2, out);
        return 0;
    }
    if (len > 3 && memcmp(s, "ip:", 3) == 0 &&
        inet_parse_prefix(s + 3, len - 3, &addr, &plen)) {
        from_addr(cfg, &addr, out);
        return 0;
    }
    if (inet_parse(s, len, &addr)) {
        from_addr(cfg, &addr, out);
        return 0;
    }
    from_login(cfg, s, len, out);
    return 0;
}
