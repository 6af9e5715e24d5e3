/* parse.c — see parse.h. */
#include "util/parse.h"

#include <stdio.h>

bool
parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || len > 20)
        return false;
    for (i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';

        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool
parse_with_unit(const char *s, size_t len, const char *units,
                const uint64_t *mult, uint64_t dflt, uint64_t *out)
{
    uint64_t v, m = dflt;
    size_t i;

    if (len == 0)
        return false;
    for (i = 0; units[i]; i++) {
        if (s[len - 1] == units[i]) {
            m = mult[i];
            len--;
            break;
        }
    }
    if (!parse_u64(s, len, &v) || (v != 0 && m > UINT64_MAX / v))
        return false;
    *out = v * m;
    return true;
}

bool
parse_duration_ms(const char *s, size_t len, uint64_t *out_ms)
{
    static const uint64_t mult[] = {1000, 60000, 3600000, 86400000,
                                    604800000};

    if (len > 2 && s[len - 2] == 'm' && s[len - 1] == 's')
        return parse_u64(s, len - 2, out_ms);
    return parse_with_unit(s, len, "smhdw", mult, 1000, out_ms);
}

bool
parse_size(const char *s, size_t len, uint64_t *out)
{
    static const uint64_t mult[] = {1024, 1024, 1048576, 1073741824};

    if (len > 1 && (s[len - 1] == 'B' || s[len - 1] == 'b'))
        len--;
    return parse_with_unit(s, len, "kKMG", mult, 1, out);
}

void
format_duration(char *out, size_t outsz, uint64_t ms)
{
    static const struct {
        uint64_t ms;
        char unit;
    } u[] = {{604800000, 'w'}, {86400000, 'd'}, {3600000, 'h'},
             {60000, 'm'},     {1000, 's'}};
    size_t i;

    for (i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
        if (ms >= u[i].ms && ms % u[i].ms == 0) {
            snprintf(out, outsz, "%llu%c", (unsigned long long)(ms / u[i].ms),
                     u[i].unit);
            return;
        }
    }
    snprintf(out, outsz, "%llums", (unsigned long long)ms);
}
