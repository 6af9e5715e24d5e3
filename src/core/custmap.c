/*
 * custmap.c — load and query the customer map (format in custmap.h and
 * etc/customers.map).
 *
 * Design: logins and networks are two hash tables of map entries pointing
 * at customers; an address is looked up once per populated prefix length,
 * longest first, so a /32 entry beats the /24 that contains it. Customer
 * rules are resolved at load time (class rules, then overrides replacing or
 * adding rules), so a lookup returns everything the engine needs.
 * Limits: CUSTMAP_MAX_LINE bytes per line, CUSTMAP_MAX_ID per customer id.
 */
#include "core/custmap.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/parse.h"
#include "util/xalloc.h"

struct map_entry {
    char *key;
    size_t len;
    struct cp_customer *cust;
};

#define NETKEY_LEN 18 /* family, prefix length, 16 address bytes */

struct map_loader {
    struct cp_config *cfg;
    char *err;
    int line;
    struct pending_ov {
        struct cp_ruleset rules;
        int line;
    } *pending; /* overrides per customer index */
    size_t cap; /* of pending[] and cfg->customers[] */
};

static bool
entry_eq(const void *val, const void *key, size_t len)
{
    const struct map_entry *e = val;

    return e->len == len && memcmp(e->key, key, len) == 0;
}

static bool
customer_eq(const void *val, const void *key, size_t len)
{
    const struct cp_customer *c = val;

    return c->idlen == len && memcmp(c->id, key, len) == 0;
}

static int __attribute__((format(printf, 2, 3)))
map_fail(struct map_loader *ml, const char *fmt, ...)
{
    char msg[CP_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ml->err, CP_ERR_MAX, "%s:%d: %s", ml->cfg->customer_map,
             ml->line, msg);
    return -1;
}

static void
netkey(char out[NETKEY_LEN], const struct inet_addr *a, unsigned plen)
{
    out[0] = (char)a->family;
    out[1] = (char)plen;
    memcpy(out + 2, a->bytes, 16);
}

static struct cp_customer *
get_customer(struct map_loader *ml, const char *id, size_t len)
{
    struct cp_config *cfg = ml->cfg;
    uint64_t h = hmap_hash(id, len);
    struct cp_customer *c = hmap_get(&cfg->customer_ids, h, id, len,
                                     customer_eq);

    if (c != NULL)
        return c;
    c = xcalloc(1, sizeof(*c));
    c->id = xmemdup0(id, len);
    c->idlen = len;
    hmap_put(&cfg->customer_ids, h, c);
    if (cfg->ncustomers == ml->cap) { /* doubling: maps of 100,000s */
        ml->cap = ml->cap ? 2 * ml->cap : 64;
        cfg->customers = xreallocarray(cfg->customers, ml->cap,
                                       sizeof(*cfg->customers));
        ml->pending = xreallocarray(ml->pending, ml->cap,
                                    sizeof(*ml->pending));
    }
    memset(&ml->pending[cfg->ncustomers], 0, sizeof(*ml->pending));
    c->idx = cfg->ncustomers;
    cfg->customers[cfg->ncustomers++] = c;
    return c;
}

static int
add_key(struct map_loader *ml, const char *k, size_t klen,
        struct cp_customer *c)
{
    struct cp_config *cfg = ml->cfg;
    struct inet_addr a;
    unsigned plen;
    char nk[NETKEY_LEN];
    struct hmap *tbl = &cfg->logins;
    struct map_entry *e;
    uint64_t h;

    if (memchr(k, '@', klen) == NULL && inet_parse_prefix(k, klen, &a, &plen)) {
        uint8_t *lens = a.family == 4 ? cfg->v4_plens : cfg->v6_plens;
        size_t *n = a.family == 4 ? &cfg->n_v4_plens : &cfg->n_v6_plens;
        size_t i;

        netkey(nk, &a, plen);
        k = nk;
        klen = NETKEY_LEN;
        tbl = &cfg->networks;
        for (i = 0; i < *n && lens[i] != plen; i++)
            ;
        if (i == *n) { /* keep the list sorted, longest first */
            for (i = (*n)++; i > 0 && lens[i - 1] < plen; i--)
                lens[i] = lens[i - 1];
            lens[i] = (uint8_t)plen;
        }
    } else if (memchr(k, '/', klen) != NULL) {
        return map_fail(ml, "'%.*s' is not a valid network (CIDR)",
                        (int)(klen > 64 ? 64 : klen), k);
    }
    h = hmap_hash(k, klen);
    if (hmap_get(tbl, h, k, klen, entry_eq) != NULL)
        return map_fail(ml, "key '%.*s' is listed twice",
                        (int)(tbl == &cfg->logins ? klen : 0), k);
    e = xmalloc(sizeof(*e));
    e->key = xmemdup0(k, klen);
    e->len = klen;
    e->cust = c;
    hmap_put(tbl, h, e);
    if (tbl == &cfg->networks) {
        c->nnetworks++;
        return 0;
    }
    if ((c->nlogins & (c->nlogins - 1)) == 0) /* 0, 1, 2, 4, ...: double */
        c->logins = xreallocarray(c->logins, c->nlogins ? 2 * c->nlogins : 1,
                                  sizeof(*c->logins));
    c->logins[c->nlogins++] = e->key;
    return 0;
}

/* domains=a.example,b.example: the customer's own mail domains. One
 * list per customer (on any one of its lines). */
static int
set_domains(struct map_loader *ml, struct cp_customer *c, const char *s,
            size_t len)
{
    if (c->domains_line != 0)
        return map_fail(ml, "domains of customer %s already given on line %d",
                        c->id, c->domains_line);
    c->domains_line = ml->line;
    for (size_t i = 0; i <= len;) {
        const char *d = s + i, *comma = memchr(d, ',', len - i);
        size_t n = comma ? (size_t)(comma - d) : len - i;

        if (n == 0 || n > 253 || memchr(d, '@', n) != NULL ||
            memchr(d, '.', n) == NULL)
            return map_fail(ml, "domains=: '%.*s' is not a domain",
                            (int)(n > 64 ? 64 : n), d);
        for (size_t j = 0; j < n; j++)
            if (d[j] <= ' ' || d[j] > '~')
                return map_fail(ml, "domains=: character 0x%02x not allowed",
                                (unsigned char)d[j]);
        if (c->ndomains == CP_CUST_MAX_DOMAINS)
            return map_fail(ml, "domains=: at most %d domains",
                            CP_CUST_MAX_DOMAINS);
        c->domain[c->ndomains++] = hmap_hash_lower(d, n);
        i += n + 1;
    }
    return 0;
}

static int
add_override(struct map_loader *ml, struct cp_customer *c, const char *t,
             size_t len)
{
    const char *eq = memchr(t, '=', len);
    struct cp_ruleset *rs = &ml->pending[c->idx].rules;
    struct cp_rule r;
    const char *why;

    memset(&r, 0, sizeof(r));
    if ((why = cp_rule_parse_name(&r, t, eq ? (size_t)(eq - t) : len)))
        return map_fail(ml, "override '%.*s': %s", (int)len, t, why);
    if (eq == NULL || !parse_size(eq + 1, len - (size_t)(eq + 1 - t), &r.max) ||
        r.max == 0)
        return map_fail(ml, "override '%.*s': expected %s=MAX with MAX > 0",
                        (int)len, t, r.name);
    for (size_t i = 0; i < rs->n; i++)
        if (strcmp(rs->rule[i].name, r.name) == 0)
            return map_fail(ml, "override %s given twice", r.name);
    if (rs->n >= CP_MAX_RULES)
        return map_fail(ml, "at most %d overrides", CP_MAX_RULES);
    r.action = CP_ACT_DEFER;
    rs->rule[rs->n++] = r;
    return 0;
}

/* contact=ADDR: where notifications for the customer go (not the possibly
 * compromised mailbox). A plain address: local@domain, printable ASCII. */
static int
set_contact(struct map_loader *ml, struct cp_customer *c, const char *a,
            size_t len)
{
    const char *at = memchr(a, '@', len);

    if (len > 254 || at == NULL || at == a || at == a + len - 1)
        return map_fail(ml, "contact=: expected an address local@domain");
    for (size_t i = 0; i < len; i++)
        if (a[i] <= ' ' || a[i] > '~' || a[i] == '<' || a[i] == '>' ||
            a[i] == ',' || a[i] == '"')
            return map_fail(ml, "contact=: character 0x%02x not allowed",
                            (unsigned char)a[i]);
    if (c->contact != NULL &&
        (strlen(c->contact) != len || memcmp(c->contact, a, len) != 0))
        return map_fail(ml, "customer %s already has contact %s", c->id,
                        c->contact);
    if (c->contact == NULL)
        c->contact = xmemdup0(a, len);
    return 0;
}

static int
parse_line(struct map_loader *ml, char *s, size_t len)
{
    const char *tok[2 + 1 + CP_MAX_RULES + 2]; /* + contact=, domains= */
    size_t tlen[sizeof(tok) / sizeof(tok[0])], n = 0, i = 0, ti;
    struct cp_customer *c;
    bool extras = false;

    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i == len || s[i] == '#')
            break;
        if (n == sizeof(tok) / sizeof(tok[0]))
            return map_fail(ml, "too many fields");
        tok[n] = s + i;
        while (i < len && s[i] != ' ' && s[i] != '\t')
            i++;
        tlen[n] = (size_t)(s + i - tok[n]);
        n++;
    }
    if (n == 0)
        return 0;
    if (n < 2)
        return map_fail(ml, "expected KEY CUSTOMER [CLASS] [OVERRIDES]");
    if (tlen[1] > CUSTMAP_MAX_ID)
        return map_fail(ml, "customer id longer than %d", CUSTMAP_MAX_ID);
    c = get_customer(ml, tok[1], tlen[1]);
    if (add_key(ml, tok[0], tlen[0], c) < 0)
        return -1;
    for (ti = 2; ti < n; ti++) {
        if (tlen[ti] > 8 && memcmp(tok[ti], "contact=", 8) == 0) {
            if (set_contact(ml, c, tok[ti] + 8, tlen[ti] - 8) < 0)
                return -1;
            continue;
        }
        if (tlen[ti] >= 8 && memcmp(tok[ti], "domains=", 8) == 0) {
            if (set_domains(ml, c, tok[ti] + 8, tlen[ti] - 8) < 0)
                return -1;
            continue;
        }
        if (memchr(tok[ti], '=', tlen[ti]) || memchr(tok[ti], '/', tlen[ti])) {
            struct pending_ov *po = &ml->pending[c->idx];

            if (c->has_overrides && po->line != ml->line)
                return map_fail(ml, "overrides of customer %s already given "
                                    "on line %d", c->id, po->line);
            po->line = ml->line;
            if (add_override(ml, c, tok[ti], tlen[ti]) < 0)
                return -1;
            c->has_overrides = true;
            extras = true;
            continue;
        }
        if (ti != 2)
            return map_fail(ml, "'%.*s': the class must come right after "
                                "the customer", (int)tlen[ti], tok[ti]);
        char name[65];
        const struct cp_class *cls;

        snprintf(name, sizeof(name), "%.*s", (int)(tlen[ti] > 64 ? 64 : tlen[ti]),
                 tok[ti]);
        if ((cls = cp_config_class(ml->cfg, name)) == NULL)
            return map_fail(ml, "unknown class '%s'", name);
        if (c->cls != NULL && c->cls != cls)
            return map_fail(ml, "customer %s already has class %s (line %d)",
                            c->id, c->cls->name, c->line);
        c->cls = cls;
        extras = true;
    }
    if (extras && c->line == 0)
        c->line = ml->line;
    return 0;
}

/* Class rules, then each override replaces the same rule or is added. */
static int
resolve_rules(struct map_loader *ml, struct cp_customer *c,
              const struct cp_ruleset *ov)
{
    if (c->cls == NULL)
        c->cls = ml->cfg->default_class;
    c->rules = c->cls->rules;
    for (size_t i = 0; i < ov->n; i++) {
        size_t j;

        for (j = 0; j < c->rules.n; j++) {
            if (strcmp(c->rules.rule[j].name, ov->rule[i].name) == 0) {
                c->rules.rule[j].max = ov->rule[i].max;
                break;
            }
        }
        if (j < c->rules.n)
            continue;
        if (c->rules.n >= CP_MAX_RULES) {
            ml->line = c->line;
            return map_fail(ml, "customer %s: more than %d limits", c->id,
                            CP_MAX_RULES);
        }
        c->rules.rule[c->rules.n++] = ov->rule[i];
    }
    return 0;
}

static int
read_lines(struct map_loader *ml, FILE *fp)
{
    char buf[CUSTMAP_MAX_LINE + 2];

    while (fgets(buf, sizeof(buf), fp) != NULL) {
        size_t len = strlen(buf);

        ml->line++;
        if (len > 0 && buf[len - 1] == '\n')
            buf[--len] = '\0';
        else if (!feof(fp))
            return map_fail(ml, "line longer than %d bytes",
                            CUSTMAP_MAX_LINE);
        if (len > 0 && buf[len - 1] == '\r')
            buf[--len] = '\0';
        if (parse_line(ml, buf, len) < 0)
            return -1;
    }
    if (ferror(fp))
        return map_fail(ml, "read error: %s", strerror(errno));
    return 0;
}

int
cp_custmap_load(struct cp_config *cfg, char *err)
{
    struct map_loader ml = {.cfg = cfg, .err = err};
    FILE *fp;
    int rc;

    hmap_init(&cfg->logins, 64);
    hmap_init(&cfg->networks, 64);
    hmap_init(&cfg->customer_ids, 64);
    if ((fp = fopen(cfg->customer_map, "r")) == NULL) {
        snprintf(err, CP_ERR_MAX, "%s: cannot open: %s", cfg->customer_map,
                 strerror(errno));
        return -1;
    }
    rc = read_lines(&ml, fp);
    fclose(fp);
    for (size_t i = 0; rc == 0 && i < cfg->ncustomers; i++)
        rc = resolve_rules(&ml, cfg->customers[i], &ml.pending[i].rules);
    free(ml.pending);
    return rc;
}

void
cp_custmap_free(struct cp_config *cfg)
{
    struct hmap *tables[] = {&cfg->logins, &cfg->networks};

    for (size_t t = 0; t < 2; t++) {
        if (tables[t]->ents == NULL)
            continue;
        HMAP_FOREACH(tables[t], i)
        {
            struct map_entry *e = tables[t]->ents[i].val;

            free(e->key);
            free(e);
        }
        hmap_fini(tables[t]);
    }
    for (size_t i = 0; i < cfg->ncustomers; i++) {
        free(cfg->customers[i]->id);
        free(cfg->customers[i]->contact);
        free(cfg->customers[i]->logins);
        free(cfg->customers[i]);
    }
    free(cfg->customers);
    if (cfg->customer_ids.ents != NULL)
        hmap_fini(&cfg->customer_ids);
    cfg->customers = NULL;
    cfg->ncustomers = 0;
}

const struct cp_customer *
cp_custmap_login(const struct cp_config *cfg, const char *login, size_t len)
{
    const struct map_entry *e;

    if (cfg->logins.ents == NULL)
        return NULL;
    e = hmap_get(&cfg->logins, hmap_hash(login, len), login, len, entry_eq);
    return e ? e->cust : NULL;
}

const struct cp_customer *
cp_custmap_network(const struct cp_config *cfg, const struct inet_addr *addr)
{
    const uint8_t *lens = addr->family == 4 ? cfg->v4_plens : cfg->v6_plens;
    size_t n = addr->family == 4 ? cfg->n_v4_plens : cfg->n_v6_plens;

    for (size_t i = 0; i < n; i++) {
        struct inet_addr a = *addr;
        char nk[NETKEY_LEN];
        const struct map_entry *e;

        inet_mask(&a, lens[i]);
        netkey(nk, &a, lens[i]);
        e = hmap_get(&cfg->networks, hmap_hash(nk, NETKEY_LEN), nk,
                     NETKEY_LEN, entry_eq);
        if (e != NULL)
            return e->cust;
    }
    return NULL;
}

const struct cp_customer *
cp_custmap_customer(const struct cp_config *cfg, const char *id, size_t len)
{
    if (cfg->customer_ids.ents == NULL)
        return NULL;
    return hmap_get(&cfg->customer_ids, hmap_hash(id, len), id, len,
                    customer_eq);
}

bool
cp_customer_owns(const struct cp_customer *c, const char *addr, size_t len)
{
    struct str d = str_domain((struct str){addr, addr ? len : 0});
    uint64_t h;

    if (c == NULL || c->ndomains == 0 || d.len == 0)
        return false;
    h = hmap_hash_lower(d.p, d.len);
    for (size_t i = 0; i < c->ndomains; i++)
        if (c->domain[i] == h)
            return true;
    return false;
}
