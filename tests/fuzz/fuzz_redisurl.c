/*
 * fuzz_redisurl.c — libFuzzer target for the store.redis URL parser: any
 * bytes, any length (no NUL terminator relied on: the input is copied to
 * a buffer of exactly its size). A URL that parses has NUL-terminated
 * fields within their arrays, a port in range, and a printable address.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/msg.h"
#include "util/redisurl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct redis_url u;
    char *copy = malloc(size ? size : 1), where[512];

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    if (redis_url_parse(copy, size, &u) == NULL) {
        if (memchr(u.host, '\0', sizeof(u.host)) == NULL ||
            memchr(u.path, '\0', sizeof(u.path)) == NULL ||
            memchr(u.user, '\0', sizeof(u.user)) == NULL ||
            memchr(u.password, '\0', sizeof(u.password)) == NULL)
            msg_panic("redisurl: a field is not terminated");
        if (u.path[0] == '\0' && (u.port < 1 || u.port > 65535))
            msg_panic("redisurl: port out of range");
        if (u.db > 65535)
            msg_panic("redisurl: database out of range");
        redis_url_where(&u, where, sizeof(where));
    }
    free(copy);
    return 0;
}
