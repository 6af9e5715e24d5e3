/*
 * parse.h — strict parsers for numbers, durations and sizes written by
 * people (config files, maps). They take (pointer, length), never need a
 * NUL terminator, reject trailing junk, and check overflow. No I/O.
 */
#ifndef CP_UTIL_PARSE_H
#define CP_UTIL_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decimal unsigned integer, no sign, no spaces. */
bool parse_u64(const char *s, size_t len, uint64_t *out);
/* Duration "90s", "10m", "1h", "1d", "1w" (a bare number is seconds) → ms. */
bool parse_duration_ms(const char *s, size_t len, uint64_t *out_ms);
/* Size "512", "20k", "20M", "2G" (powers of 1024) → bytes. */
bool parse_size(const char *s, size_t len, uint64_t *out);
/* Format a duration in ms as the shortest exact unit: "1h", "90s", "1500ms". */
void format_duration(char *out, size_t outsz, uint64_t ms);

#endif
