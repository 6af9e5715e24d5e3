/* yamlwalk.c — see yamlwalk.h. */
#include "util/yamlwalk.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "util/parse.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

const char *
yw_scalar(struct fy_node *n, size_t *len)
{
    if (n == NULL || !fy_node_is_scalar(n) || fy_node_is_alias(n))
        return NULL;
    return fy_node_get_scalar(n, len);
}

/* The scalar whose position stands for node n: itself, or a collection's
 * first key or item (a loop: a document may nest deeply). */
static struct fy_token *
position(struct fy_node *n)
{
    while (n != NULL && !fy_node_is_scalar(n)) {
        void *it = NULL;
        struct fy_node_pair *p;

        if (fy_node_is_mapping(n)) {
            p = fy_node_mapping_iterate(n, &it);
            n = p ? fy_node_pair_key(p) : NULL;
        } else {
            n = fy_node_is_sequence(n) ? fy_node_sequence_iterate(n, &it)
                                       : NULL;
        }
    }
    return n ? fy_node_get_scalar_token(n) : NULL;
}

int
yw_vfail(struct yw *w, struct fy_node *at, const char *fmt, va_list ap)
{
    char msg[YW_ERR_MAX], where[64] = "";
    struct fy_token *t = position(at);
    const struct fy_mark *m;

    if (t == NULL)
        t = position(w->at);
    m = t ? fy_token_start_mark(t) : NULL;
    if (m != NULL)
        snprintf(where, sizeof(where), ":%d:%d", m->line + 1, m->column + 1);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    snprintf(w->err, YW_ERR_MAX, "%s%s: %.*s%s%s", w->file, where,
             (int)w->pathlen, w->path, w->pathlen ? ": " : "", msg);
    return -1;
}

int
yw_fail(struct yw *w, struct fy_node *at, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    yw_vfail(w, at, fmt, ap);
    va_end(ap);
    return -1;
}

struct yw_mark
yw_push(struct yw *w, struct fy_node *key, const char *name, size_t len)
{
    struct yw_mark m = {w->pathlen, w->at};
    size_t room = sizeof(w->path) - w->pathlen;
    int n = snprintf(w->path + w->pathlen, room, "%s%.*s",
                     w->pathlen ? "." : "", (int)len, name);

    if (n > 0)
        w->pathlen += (size_t)n < room ? (size_t)n : room - 1;
    if (key != NULL)
        w->at = key;
    return m;
}

void
yw_pop(struct yw *w, struct yw_mark m)
{
    w->pathlen = m.pathlen;
    w->at = m.at;
}

static void
diag_output(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    struct yw *w = user;
    const char *end, *lvl;

    (void)diag;
    if (w->err[0] != '\0')
        return;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        len--;
    /* "<memory-@0x...>:LINE:COL: error: WHAT" (the buffer's name, as
     * libfyaml parsed a string) becomes "FILE:LINE:COL: WHAT" */
    if (len > 0 && buf[0] == '<' &&
        (end = memchr(buf, '>', len)) != NULL && end + 1 < buf + len &&
        end[1] == ':') {
        len -= (size_t)(end + 2 - buf);
        buf = end + 2;
        lvl = memmem(buf, len, ": error: ", 9);
        if (lvl != NULL) {
            snprintf(w->err, YW_ERR_MAX, "%s:%.*s: %.*s", w->file,
                     (int)(lvl - buf), buf,
                     (int)(len - (size_t)(lvl + 9 - buf) > 300
                               ? 300
                               : len - (size_t)(lvl + 9 - buf)),
                     lvl + 9);
            return;
        }
    }
    snprintf(w->err, YW_ERR_MAX, "%.*s", (int)(len > 400 ? 400 : len), buf);
}

/* Read the whole file (at most YW_MAX_FILE bytes) into a new buffer. */
static char *
read_file(struct yw *w, size_t *len)
{
    FILE *fp = fopen(w->file, "rb");
    char *buf;
    size_t n;

    if (fp == NULL) {
        snprintf(w->err, YW_ERR_MAX, "%s: cannot open: %s", w->file,
                 strerror(errno));
        return NULL;
    }
    buf = xmalloc(YW_MAX_FILE + 1);
    n = fread(buf, 1, YW_MAX_FILE + 1, fp);
    if (ferror(fp) || n > YW_MAX_FILE) {
        snprintf(w->err, YW_ERR_MAX, "%s: %s", w->file,
                 ferror(fp) ? "read error" : "larger than 1 MiB");
        fclose(fp);
        free(buf);
        return NULL;
    }
    fclose(fp);
    *len = n;
    return buf;
}

/* YAML is UTF-8; refusing anything else first also keeps malformed bytes
 * away from the parser (libfyaml 0.7.12 loops forever on some). */
static int
check_utf8(struct yw *w, const char *buf, size_t len)
{
    size_t bad = utf8_check(buf, len);
    int line = 1, col = 1;

    if (bad == len && memchr(buf, '\0', len) == NULL)
        return 0;
    if (bad == len)
        bad = (size_t)((const char *)memchr(buf, '\0', len) - buf);
    for (size_t i = 0; i < bad; i++, col++)
        if (buf[i] == '\n') {
            line++;
            col = 0;
        }
    snprintf(w->err, YW_ERR_MAX, "%s:%d:%d: not UTF-8 text", w->file, line,
             col);
    return -1;
}

struct fy_document *
yw_parse_file(struct yw *w)
{
    struct fy_diag_cfg dcfg;
    struct fy_parse_cfg pcfg;
    struct fy_document *doc;
    struct fy_diag *diag;
    size_t len;
    char *buf;

    w->err[0] = '\0';
    w->at = NULL;
    w->pathlen = 0;
    if ((buf = read_file(w, &len)) == NULL)
        return NULL;
    if (check_utf8(w, buf, len) < 0) {
        free(buf);
        return NULL;
    }
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_output;
    dcfg.user = w;
    dcfg.colorize = false;
    dcfg.show_source = false;
    dcfg.show_position = true;
    diag = fy_diag_create(&dcfg);
    memset(&pcfg, 0, sizeof(pcfg));
    pcfg.flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2;
    pcfg.diag = diag;
    /* the document points into buf: it lives until yw_done() */
    doc = fy_document_build_from_string(&pcfg, buf, len);
    fy_diag_destroy(diag);
    w->buf = buf;
    if (doc == NULL && (w->err[0] == '\0' || strstr(w->err, "[ERR]"))) {
        /* libfyaml's generic failure: in practice an empty document */
        snprintf(w->err, YW_ERR_MAX, "%s: empty or not a YAML document",
                 w->file);
    } else if (doc == NULL && strstr(w->err, w->file) == NULL) {
        char tmp[YW_ERR_MAX];

        snprintf(tmp, sizeof(tmp), "%s: %s", w->file, w->err);
        memcpy(w->err, tmp, YW_ERR_MAX);
    }
    return doc;
}

void
yw_done(struct yw *w, struct fy_document *doc)
{
    if (doc != NULL)
        fy_document_destroy(doc);
    free(w->buf);
    w->buf = NULL;
}

/* The pair of mapping `map` whose key is the scalar name[0..len). */
static struct fy_node_pair *
lookup(struct fy_node *map, const char *name, size_t len)
{
    struct fy_node_pair *p;
    void *it = NULL;

    while ((p = fy_node_mapping_iterate(map, &it)) != NULL) {
        size_t klen;
        const char *k = yw_scalar(fy_node_pair_key(p), &klen);

        if (k != NULL && klen == len && memcmp(k, name, len) == 0)
            return p;
    }
    return NULL;
}

struct fy_node *
yw_find_key(struct fy_node *map, const char *key)
{
    struct fy_node *found = NULL;

    while (*key != '\0' && map != NULL && fy_node_is_mapping(map)) {
        size_t len = strcspn(key, ".");
        struct fy_node_pair *p = lookup(map, key, len);

        if (p == NULL)
            break;
        found = fy_node_pair_key(p);
        map = fy_node_pair_value(p);
        key += len + (key[len] == '.');
    }
    return found;
}

int
yw_fail_key(struct yw *w, struct fy_node *map, const char *key, const char *fmt,
            ...)
{
    struct yw_mark m = yw_push(w, yw_find_key(map, key), key, strlen(key));
    va_list ap;

    va_start(ap, fmt);
    yw_vfail(w, NULL, fmt, ap);
    va_end(ap);
    yw_pop(w, m);
    return -1;
}

static bool
eq(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

bool
yw_is_empty(struct fy_node *n)
{
    size_t len;
    const char *s;

    if (n == NULL)
        return true;
    if ((s = yw_scalar(n, &len)) == NULL)
        return false;
    if (len == 0)
        return true;
    /* YAML 1.2's other spellings of null, when not quoted */
    return fy_node_get_style(n) == FYNS_PLAIN &&
           (eq(s, len, "~") || eq(s, len, "null") || eq(s, len, "Null") ||
            eq(s, len, "NULL"));
}

static int
parse_double(const char *s, size_t len, double *out)
{
    char buf[64], *end;

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    *out = strtod(buf, &end);
    return *end == '\0' ? 0 : -1;
}

static int
parse_date(const char *s, size_t len, int64_t *out)
{
    uint64_t y, mo, d;
    struct tm tm;

    if (len != 10 || s[4] != '-' || s[7] != '-' || !parse_u64(s, 4, &y) ||
        !parse_u64(s + 5, 2, &mo) || !parse_u64(s + 8, 2, &d) || mo < 1 ||
        mo > 12 || d < 1 || d > 31)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = (int)y - 1900;
    tm.tm_mon = (int)mo - 1;
    tm.tm_mday = (int)d;
    *out = (int64_t)timegm(&tm) * 1000;
    return 0;
}

/* ---- numbers ---- */

enum num { NUM_U32, NUM_DOUBLE, NUM_DURATION, NUM_SIZE, NUM_BYTES };

static const char *const num_expected[] = {
    "a non-negative integer", "a number", "a duration like 90s, 10m, 1h, 1d",
    "a number or a size like 20k, 1M", "a size like 4096, 16k, 20M"};

static bool
parse_num(enum num k, const char *s, size_t len, double *d, uint64_t *u)
{
    bool ok;

    if (k == NUM_DOUBLE || k == NUM_SIZE) {
        if (parse_double(s, len, d) == 0)
            return true;
        if (k == NUM_DOUBLE)
            return false;
    }
    ok = k == NUM_DURATION ? parse_duration_ms(s, len, u)
         : k == NUM_U32    ? parse_u64(s, len, u)
                           : parse_size(s, len, u);
    *d = (double)*u;
    return ok;
}

/* A bound as the user writes it: 1d, not 86400000. */
static void
format_bound(char *out, size_t outsz, enum num k, double v)
{
    if (k == NUM_DURATION)
        format_duration(out, outsz, (uint64_t)v);
    else if (v == floor(v) && fabs(v) < 1e17)
        snprintf(out, outsz, "%.0f", v);
    else
        snprintf(out, outsz, "%g", v);
}

static int
set_number(struct yw *w, struct fy_node *v, void *base,
           const struct yw_field *f, enum num k)
{
    char *dst = (char *)base + f->off, lo[32], hi[32];
    size_t len;
    const char *s = yw_scalar(v, &len);
    double d = 0;
    uint64_t u = 0;

    if (s == NULL || !parse_num(k, s, len, &d, &u))
        return yw_fail(w, v, "expected %s", num_expected[k]);
    if (!(d >= f->min && d <= f->max)) { /* NaN too */
        format_bound(lo, sizeof(lo), k, f->min);
        format_bound(hi, sizeof(hi), k, f->max);
        return yw_fail(w, v, "out of range [%s, %s]", lo, hi);
    }
    if (k == NUM_DURATION || k == NUM_BYTES)
        *(uint64_t *)dst = u;
    else if (k == NUM_U32)
        *(uint32_t *)dst = (uint32_t)u;
    else
        *(double *)dst = d;
    return 0;
}

int
yw_u32(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    return set_number(w, v, base, f, NUM_U32);
}

int
yw_double(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    return set_number(w, v, base, f, NUM_DOUBLE);
}

int
yw_duration(struct yw *w, struct fy_node *v, void *base,
            const struct yw_field *f)
{
    return set_number(w, v, base, f, NUM_DURATION);
}

int
yw_size(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    return set_number(w, v, base, f, NUM_SIZE);
}

int
yw_bytes(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    return set_number(w, v, base, f, NUM_BYTES);
}

/* ---- other scalars ---- */

int
yw_str(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    char *dst = (char *)base + f->off;
    size_t len;
    const char *s = yw_scalar(v, &len);

    if (s == NULL || len == 0 || len >= (size_t)f->min || memchr(s, 0, len))
        return yw_fail(w, v, "expected a string of 1..%d bytes",
                       (int)f->min - 1);
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

int
yw_strdup(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    char **dst = (char **)((char *)base + f->off);
    size_t len;
    const char *s = yw_scalar(v, &len);

    if (s == NULL || len == 0 || memchr(s, 0, len))
        return yw_fail(w, v, "expected a non-empty string");
    free(*dst);
    *dst = xmemdup0(s, len);
    return 0;
}

static bool
eq_nocase(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && strncasecmp(s, lit, len) == 0;
}

int
yw_bool(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    static const char *const spellings[] = {"true", "false", "yes",
                                            "no",   "on",    "off"};
    size_t len;
    const char *s = yw_scalar(v, &len);

    for (size_t i = 0; s != NULL && i < 6; i++) {
        if (eq_nocase(s, len, spellings[i])) {
            *(bool *)((char *)base + f->off) = i % 2 == 0;
            return 0;
        }
    }
    return yw_fail(w, v, "expected a boolean: true/false, yes/no or on/off");
}

int
yw_enum_index(struct yw *w, struct fy_node *v, const char *const *names)
{
    char list[256];
    size_t len, off = 0;
    const char *s = yw_scalar(v, &len);
    int i;

    for (i = 0; s != NULL && names[i] != NULL; i++)
        if (eq(s, len, names[i]))
            return i;
    list[0] = '\0';
    for (i = 0; names[i] != NULL && off < sizeof(list); i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
                                i ? ", " : "", names[i]);
    if (s == NULL)
        return yw_fail(w, v, "expected one of %s", list);
    return yw_fail(w, v, "expected one of %s (not '%.*s')", list,
                   (int)(len > 40 ? 40 : len), s);
}

int
yw_enum(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    int i = yw_enum_index(w, v, f->aux);

    if (i < 0)
        return -1;
    *(int *)((char *)base + f->off) = i;
    return 0;
}

int
yw_date(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    size_t len;
    const char *s = yw_scalar(v, &len);

    if (s == NULL || parse_date(s, len, (int64_t *)((char *)base + f->off)) < 0)
        return yw_fail(w, v, "expected a date YYYY-MM-DD");
    return 0;
}

/* ---- structure ---- */

int
yw_map(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    return yw_load(w, v, f->aux, (char *)base + f->off);
}

int
yw_node(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    (void)w;
    *(struct fy_node **)((char *)base + f->off) = v;
    return 0;
}

int
yw_skip(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    (void)w, (void)v, (void)base, (void)f;
    return 0;
}

int
yw_load(struct yw *w, struct fy_node *map, const struct yw_field *fields,
        void *base)
{
    struct fy_node_pair *pair;
    void *it = NULL;

    if (yw_is_empty(map))
        return 0;
    if (!fy_node_is_mapping(map))
        return yw_fail(w, map, "expected a mapping");
    while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *k = fy_node_pair_key(pair);
        size_t len;
        const char *name = yw_scalar(k, &len);
        const struct yw_field *f;
        struct yw_mark m;
        int rc;

        for (f = fields; name && f->name; f++)
            if (eq(name, len, f->name))
                break;
        if (name == NULL || f->name == NULL)
            return yw_fail(w, k, "unknown key '%.*s'",
                           name ? (int)(len > 40 ? 40 : len) : 1,
                           name ? name : "?");
        m = yw_push(w, k, name, len);
        rc = f->set(w, fy_node_pair_value(pair), base, f);
        yw_pop(w, m);
        if (rc < 0)
            return -1;
    }
    return 0;
}
