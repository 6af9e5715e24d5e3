/*
 * yamlwalk.h — load a YAML mapping into a C struct through a declared table
 * of fields, with libfyaml. The one walker of every YAML file we read: the
 * daemon's config (core/config.c) and the simulator's scenarios.
 *
 * Each field names a handler, as nginx's directives name their `set`
 * function: the built-in ones below parse the common types into
 * base + off; a file with a syntax of its own (addresses, lists of users,
 * the classes of the config) declares its own handler in the same table.
 *
 * The rules are the same in every mapping, so users learn them once:
 *  - an unknown key is refused ("unknown key 'x'");
 *  - an empty mapping (a key with nothing under it, `~`, `null` or `{}`)
 *    leaves every field at its default;
 *  - a boolean is true/false, yes/no or on/off, in any case (YAML 1.1's
 *    spellings: Postfix admins write yes and no);
 *  - every refusal reads "file:line:column: key.path: reason", the path
 *    naming the key from the top of the file (the position is left out
 *    only when the file holds no node to point at).
 */
#ifndef CP_UTIL_YAMLWALK_H
#define CP_UTIL_YAMLWALK_H

#include <libfyaml.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#define YW_ERR_MAX 512
#define YW_MAX_FILE (1024 * 1024) /* bytes of one YAML file */
#define YW_PATH_MAX 160           /* of the key path in errors; truncated */

struct yw_field;

struct yw {
    const char *file;
    char *err;              /* YW_ERR_MAX bytes */
    char *buf;              /* the file's text, referenced by the document */
    struct fy_node *at;     /* the key being loaded: an error with no node of
                               its own points at it */
    char path[YW_PATH_MAX]; /* "daemon.listen": the keys down to it */
    size_t pathlen;
};

/*
 * A field's handler: parse value `v` into the struct `base` the table
 * describes (usually at base + f->off). `v` is a null scalar when the key
 * was given with nothing after it. Returns 0, or -1 after yw_fail(); the
 * key is already on the path, so messages give only the reason.
 */
typedef int yw_set_fn(struct yw *w, struct fy_node *v, void *base,
                      const struct yw_field *f);

struct yw_field {
    const char *name;
    yw_set_fn *set;
    size_t off;
    double min, max; /* range for numbers; buffer size for yw_str */
    const void *aux; /* the handler's own: yw_enum's names, yw_map's table */
};

/* Built-in handlers; numbers are checked against [min, max]. */
yw_set_fn yw_u32;      /* uint32_t */
yw_set_fn yw_double;   /* double */
yw_set_fn yw_duration; /* uint64_t ms: "90s", "2h", "1d" */
yw_set_fn yw_size;     /* double: a number, or bytes like "20k", "1M" */
yw_set_fn yw_bytes;    /* uint64_t bytes: "4096", "16k", "20M" */
yw_set_fn yw_str;      /* char[min] (min = buffer size), not empty */
yw_set_fn yw_strdup;   /* char *, allocated (the old value is freed) */
yw_set_fn yw_bool;     /* bool */
yw_set_fn yw_enum;     /* int; aux = NULL-terminated const char *[] */
yw_set_fn yw_map;      /* nested struct at off; aux = its yw_field[] */
yw_set_fn yw_date;     /* int64_t ms since the epoch, "2026-11-02" (UTC) */
yw_set_fn yw_node;     /* struct fy_node *, for the caller to load later */
yw_set_fn yw_skip;     /* a known key the caller handles itself */

/* Parse a file (UTF-8, at most YW_MAX_FILE bytes); NULL with w->err set on
 * an error. Call yw_done() afterwards in either case. */
struct fy_document *yw_parse_file(struct yw *w);
/* Destroy the document (may be NULL) and the text it points into. */
void yw_done(struct yw *w, struct fy_document *doc);
/* Fill `base` from mapping `map` per `fields` (NULL-name terminated); an
 * empty `map` (yw_is_empty) leaves it as it is. */
int yw_load(struct yw *w, struct fy_node *map, const struct yw_field *fields,
            void *base);

/* Refuse: "file:line:column: path: reason" at node `at` (a collection:
 * its first scalar; NULL or none: w->at). Always returns -1. */
int yw_fail(struct yw *w, struct fy_node *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int yw_vfail(struct yw *w, struct fy_node *at, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Refuse what a check after the walk found wrong with `key` of `map`
 * (dotted, "notify.from"), naming it after the path: points at the key
 * where it is written, else at the nearest enclosing key written. */
int yw_fail_key(struct yw *w, struct fy_node *map, const char *key,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The key node of dotted `key` in `map`, or of the nearest enclosing key
 * given; NULL if not even the first is. */
struct fy_node *yw_find_key(struct fy_node *map, const char *key);

/* For handlers that descend on their own (a mapping of names, a list):
 * name the key they are in; yw_pop() restores what yw_push() returns. */
struct yw_mark {
    size_t pathlen;
    struct fy_node *at;
};
struct yw_mark yw_push(struct yw *w, struct fy_node *key, const char *name,
                       size_t len);
void yw_pop(struct yw *w, struct yw_mark m);

/* Scalar text of a node (NULL if not a scalar). */
const char *yw_scalar(struct fy_node *n, size_t *len);
/* An empty value: a null scalar (nothing, "~", "null") or an empty one. */
bool yw_is_empty(struct fy_node *n);
/* The index of the scalar `v` in `names` (NULL-terminated), or -1 after
 * yw_fail() listing them. */
int yw_enum_index(struct yw *w, struct fy_node *v, const char *const *names);

#endif
