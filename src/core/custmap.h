/*
 * custmap.h — the customer map: SASL logins and client networks → customer
 * id, class and per-customer limit overrides. Text file, one entry a line:
 *
 *     KEY  CUSTOMER  [CLASS]  [contact=ADDR] [domains=D,...]
 *          [metric/window=max ...]
 *
 * (format documented in etc/customers.map). The map is part of a cp_config
 * and shares its lifetime; lookups are read-only and O(1) for logins,
 * O(number of distinct prefix lengths) for addresses.
 */
#ifndef CP_CORE_CUSTMAP_H
#define CP_CORE_CUSTMAP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "util/inet.h"

#define CUSTMAP_MAX_LINE 4096
#define CUSTMAP_MAX_ID 255

/* Parse cfg->customer_map into cfg. Returns 0, or -1 with err filled. */
int cp_custmap_load(struct cp_config *cfg, char *err);
void cp_custmap_free(struct cp_config *cfg);

const struct cp_customer *cp_custmap_login(const struct cp_config *cfg,
                                           const char *login, size_t len);
const struct cp_customer *cp_custmap_network(const struct cp_config *cfg,
                                             const struct inet_addr *addr);
const struct cp_customer *cp_custmap_customer(const struct cp_config *cfg,
                                              const char *id, size_t len);

/* Is `addr` (local@domain) at one of customer c's own domains (domains=
 * in the map)? False for c NULL. */
bool cp_customer_owns(const struct cp_customer *c, const char *addr,
                      size_t len);

/*
 * Parse one "metric/window=max" (or "metric/window") token into rule
 * fields; used by the map and the YAML loader. Returns an error string or
 * NULL.
 */
const char *cp_rule_parse_name(struct cp_rule *r, const char *s, size_t len);

#endif
