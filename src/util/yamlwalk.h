/*
 * yamlwalk.h — load a YAML mapping into a C struct through a declared table
 * of fields, with libfyaml. Unknown keys, wrong types and out-of-range
 * values are refused with "file:line:column: reason". Used for the
 * simulator's scenario files (the daemon's config has its own tables in
 * core/config.c).
 */
#ifndef CP_UTIL_YAMLWALK_H
#define CP_UTIL_YAMLWALK_H

#include <libfyaml.h>
#include <stddef.h>

#define YW_ERR_MAX 512
#define YW_MAX_FILE (1024 * 1024) /* bytes of one YAML file */

enum yw_type {
    YW_U32,      /* uint32_t */
    YW_DOUBLE,   /* double */
    YW_DURATION, /* uint64_t ms, "90s", "2h", "1d" */
    YW_SIZE,     /* double: a number, or bytes like "20k", "1M" */
    YW_STR,      /* char[min] (min = buffer size) */
    YW_BOOL,     /* bool */
    YW_ENUM,     /* int; aux = NULL-terminated const char *[] */
    YW_MAP,      /* nested struct at off; aux = const struct yw_field[] */
    YW_DATE,     /* int64_t ms since the epoch, "2026-11-02" (UTC) */
    YW_SKIP,     /* a known key the caller handles itself */
};

struct yw_field {
    const char *name;
    enum yw_type type;
    size_t off;
    double min, max; /* range for numbers; buffer size for YW_STR */
    const void *aux;
};

struct yw {
    const char *file;
    char *err; /* YW_ERR_MAX bytes */
    char *buf; /* the file's text, referenced by the document */
};

/* Parse a file (UTF-8, at most YW_MAX_FILE bytes); NULL with w->err set on
 * an error. Call yw_done() afterwards in either case. */
struct fy_document *yw_parse_file(struct yw *w);
/* Destroy the document (may be NULL) and the text it points into. */
void yw_done(struct yw *w, struct fy_document *doc);
/* Fill `base` from mapping `map` per `fields` (NULL-name terminated). */
int yw_load(struct yw *w, struct fy_node *map, const struct yw_field *fields,
            void *base);
int yw_fail(struct yw *w, struct fy_node *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Scalar text of a node (NULL if not a scalar). */
const char *yw_scalar(struct fy_node *n, size_t *len);

#endif
