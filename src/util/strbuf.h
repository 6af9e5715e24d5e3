/*
 * strbuf.h — a growable byte buffer for building replies, JSON and log
 * lines, plus the escaping used wherever untrusted text is shown.
 *
 * A strbuf is always NUL-terminated after its `len` bytes. It grows with
 * xrealloc (OOM is fatal); callers that append untrusted data bound it first.
 */
#ifndef CP_UTIL_STRBUF_H
#define CP_UTIL_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strbuf {
    char *data;
    size_t len;
    size_t cap;
};

void sb_init(struct strbuf *sb);
void sb_fini(struct strbuf *sb);
void sb_reset(struct strbuf *sb);
void sb_append(struct strbuf *sb, const char *data, size_t len);
void sb_puts(struct strbuf *sb, const char *s);
void sb_printf(struct strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Append `s` as a JSON string literal, quotes included. */
void sb_json_str(struct strbuf *sb, const char *s, size_t len);
/* Append a measured number in JSON ("null" for NaN/inf): at most 3
 * decimals, always with a fraction ("720.0", "719.999", "16.5"), so one
 * field is one JSON type; counts are written as integers (sb_json_ku64). */
void sb_json_num(struct strbuf *sb, double v);
/*
 * The JSON documents chokepoint writes, each described in doc/json.md and
 * by a JSON Schema, doc/schema/NAME.json. A document's first member names
 * its schema and version: "schema":"chokepoint.NAME/N". A member added
 * keeps N; a member removed, or one whose meaning or type changes, bumps
 * it (and the schema file with it). One list, so a new document kind is
 * seen here (tests/integration/test_json_schema.py checks it has a schema).
 */
#define CP_JSON_DECISION "chokepoint.decision/1" /* daemon.decision_log */
#define CP_JSON_STATUS "chokepoint.status/1"     /* chokepoint --json ... */
#define CP_JSON_TOP "chokepoint.top/1"
#define CP_JSON_SHOW "chokepoint.show/1"
#define CP_JSON_HISTORY "chokepoint.history/1"
#define CP_JSON_INCIDENT "chokepoint.incident/1"
#define CP_JSON_CHANGE "chokepoint.change/1" /* block, release, allow */
#define CP_JSON_RELOAD "chokepoint.reload/1"
#define CP_JSON_ERROR "chokepoint.error/1"   /* any admin command's refusal */
#define CP_JSON_REPLAY "chokepoint.replay/1" /* chokepoint replay --json */
#define CP_JSON_LEARN "chokepoint.learn/1"   /* chokepoint learn --json */
#define CP_JSON_SIM "chokepoint.sim/1"       /* chokepoint sim --json */
#define CP_JSON_WEBHOOK "chokepoint.webhook/1" /* notify.webhook's POST */

/* Open a document: "{" and its "schema" member (one of CP_JSON_*); every
 * member after it is written with first = false. */
void sb_json_open(struct strbuf *sb, const char *schema);

/*
 * Members of a JSON object, the one writer of every JSON chokepoint prints
 * (decision log, webhook, admin replies, replay): `"name":value`, preceded
 * by a comma unless `first`. A string member with s == NULL is null.
 */
void sb_json_key(struct strbuf *sb, const char *name, bool first);
void sb_json_kstr(struct strbuf *sb, const char *name, const char *s,
                  size_t len, bool first);
void sb_json_kcstr(struct strbuf *sb, const char *name, const char *s,
                   bool first); /* s: a C string, or NULL */
void sb_json_ku64(struct strbuf *sb, const char *name, uint64_t v,
                  bool first);
void sb_json_knum(struct strbuf *sb, const char *name, double v, bool first);
void sb_json_kbool(struct strbuf *sb, const char *name, bool v, bool first);
/* A measured ratio or rate (the simulator's report): 6 significant
 * digits, always with a fraction or an exponent ("1.0", "0.000123",
 * "1.23457e+06"), as sb_json_num; NaN (nothing measured) and inf are
 * null. Counts are never written with it (sb_json_ku64). */
void sb_json_kreal(struct strbuf *sb, const char *name, double v, bool first);

/* Offset of the first byte that is not valid UTF-8, or len if all is. */
size_t utf8_check(const char *s, size_t len);

/*
 * Escape untrusted bytes for a log line: printable ASCII is kept, anything
 * else becomes \xNN, and the result is cut at `max_in` input bytes with
 * "..." appended. Writes at most `outsz` bytes including the NUL; returns
 * `out`.
 */
const char *str_escape(char *out, size_t outsz, const char *in, size_t inlen,
                       size_t max_in);

/* "2026-11-23T16:40:01.123Z" (UTC, from ms since the epoch) */
void cp_format_time(char *out, size_t n, int64_t ms);

#endif
