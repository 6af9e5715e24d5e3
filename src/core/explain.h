/*
 * explain.h — render a decision as one JSON line (the decision log) and as
 * one human-readable log line. Untrusted request fields are escaped: JSON
 * escaping in the JSON line, \xNN and truncation in the text line.
 * Pure: formats into a strbuf, the caller writes it.
 */
#ifndef CP_CORE_EXPLAIN_H
#define CP_CORE_EXPLAIN_H

#include <stdint.h>

#include "core/engine.h"
#include "core/policy.h"
#include "util/strbuf.h"

#define EXPLAIN_MAX_FIELD 128 /* bytes of one request field that are shown */

/* `incident`: the number of the state change d reports (incident_apply),
 * 0 if none (or it could not be recorded). */
void cp_explain_json(struct strbuf *sb, const struct cp_decision *d,
                     const struct cp_event *ev, uint64_t incident,
                     int64_t now_ms);
void cp_explain_text(struct strbuf *sb, const struct cp_decision *d,
                     const struct cp_event *ev, uint64_t incident);

#endif
