/* yamlwalk.c — see yamlwalk.h. */
#include "util/yamlwalk.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int
yw_fail(struct yw *w, struct fy_node *at, const char *fmt, ...)
{
    char msg[YW_ERR_MAX];
    struct fy_token *t = at ? fy_node_get_scalar_token(at) : NULL;
    const struct fy_mark *m = t ? fy_token_start_mark(t) : NULL;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m != NULL)
        snprintf(w->err, YW_ERR_MAX, "%s:%d:%d: %s", w->file, m->line + 1,
                 m->column + 1, msg);
    else
        snprintf(w->err, YW_ERR_MAX, "%s: %s", w->file, msg);
    return -1;
}

static void
diag_output(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    struct yw *w = user;

    (void)diag;
    if (w->err[0] != '\0')
        return;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        len--;
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

static bool
eq(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
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

static int
set_number(struct yw *w, const struct yw_field *f, struct fy_node *v,
           const char *s, size_t len, char *dst)
{
    double d = 0;
    uint64_t u = 0;
    int bad;

    switch (f->type) {
    case YW_DURATION:
        bad = !parse_duration_ms(s, len, &u);
        d = (double)u;
        break;
    case YW_SIZE: /* a plain number, or a size with a unit */
        if (parse_double(s, len, &d) == 0) {
            bad = 0;
            break;
        }
        bad = !parse_size(s, len, &u);
        d = (double)u;
        break;
    case YW_U32:
        bad = !parse_u64(s, len, &u);
        d = (double)u;
        break;
    default:
        bad = parse_double(s, len, &d) < 0;
    }
    if (bad)
        return yw_fail(w, v, "%s: expected %s", f->name,
                       f->type == YW_DURATION ? "a duration like 30m, 2h, 1d"
                       : f->type == YW_SIZE   ? "a size like 20k, 1M"
                       : f->type == YW_U32    ? "a non-negative integer"
                                              : "a number");
    if (d < f->min || d > f->max)
        return yw_fail(w, v, "%s: out of range [%g, %g]", f->name, f->min,
                       f->max);
    if (f->type == YW_DURATION)
        *(uint64_t *)dst = u;
    else if (f->type == YW_U32)
        *(uint32_t *)dst = (uint32_t)u;
    else
        *(double *)dst = d;
    return 0;
}

static int
set_field(struct yw *w, const struct yw_field *f, struct fy_node *v,
          char *base)
{
    size_t len;
    const char *s = yw_scalar(v, &len);
    char *dst = base + f->off;

    if (f->type == YW_SKIP)
        return 0;
    if (f->type == YW_MAP)
        return yw_load(w, v, f->aux, dst);
    if (s == NULL)
        return yw_fail(w, v, "%s: expected a value", f->name);
    switch (f->type) {
    case YW_STR:
        if (len == 0 || len >= (size_t)f->min || memchr(s, 0, len))
            return yw_fail(w, v, "%s: expected a string of 1..%d bytes",
                           f->name, (int)f->min - 1);
        memcpy(dst, s, len);
        dst[len] = '\0';
        return 0;
    case YW_BOOL:
        if (eq(s, len, "true") || eq(s, len, "false")) {
            *(bool *)dst = eq(s, len, "true");
            return 0;
        }
        return yw_fail(w, v, "%s: expected true or false", f->name);
    case YW_ENUM:
        for (int i = 0; ((const char *const *)f->aux)[i]; i++) {
            if (eq(s, len, ((const char *const *)f->aux)[i])) {
                *(int *)dst = i;
                return 0;
            }
        }
        return yw_fail(w, v, "%s: unknown value '%.*s'", f->name,
                       (int)(len > 40 ? 40 : len), s);
    case YW_DATE:
        if (parse_date(s, len, (int64_t *)dst) < 0)
            return yw_fail(w, v, "%s: expected a date YYYY-MM-DD", f->name);
        return 0;
    default:
        return set_number(w, f, v, s, len, dst);
    }
}

int
yw_load(struct yw *w, struct fy_node *map, const struct yw_field *fields,
        void *base)
{
    struct fy_node_pair *pair;
    void *it = NULL;

    if (map == NULL || !fy_node_is_mapping(map))
        return yw_fail(w, map, "expected a mapping");
    while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *k = fy_node_pair_key(pair);
        size_t len;
        const char *name = yw_scalar(k, &len);
        const struct yw_field *f;

        for (f = fields; name && f->name; f++)
            if (eq(name, len, f->name))
                break;
        if (name == NULL || f->name == NULL)
            return yw_fail(w, k, "unknown key '%.*s'",
                           name ? (int)(len > 40 ? 40 : len) : 1,
                           name ? name : "?");
        if (set_field(w, f, fy_node_pair_value(pair), base) < 0)
            return -1;
    }
    return 0;
}
