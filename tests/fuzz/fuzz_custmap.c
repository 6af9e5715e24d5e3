/*
 * fuzz_custmap.c — libFuzzer target for the configuration and customer map
 * loaders: the input is split at the first NUL into a YAML config and a
 * map, both written to temporary files and loaded ("@MAP@" in the YAML is
 * replaced by the map's path). Any input must load or
 * be refused with an error message; nothing may crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "util/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *fp = fopen(path, "w");

    if (fp == NULL || fwrite(data, 1, len, fp) != len || fclose(fp) != 0)
        msg_fatal("cannot write %s", path);
}

static void
write_yaml(const char *path, const uint8_t *data, size_t len, const char *map)
{
    FILE *fp = fopen(path, "w");
    size_t i = 0;

    if (fp == NULL)
        msg_fatal("cannot write %s", path);
    while (i < len) {
        if (len - i >= 5 && memcmp(data + i, "@MAP@", 5) == 0) {
            fputs(map, fp);
            i += 5;
        } else {
            fputc(data[i++], fp);
        }
    }
    if (fclose(fp) != 0)
        msg_fatal("cannot write %s", path);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[64];
    char yaml[128], map[128], err[CP_ERR_MAX];
    const uint8_t *nul = memchr(data, 0, size);
    size_t ylen = nul ? (size_t)(nul - data) : size;
    struct cp_config *cfg;

    if (dir[0] == '\0') {
        snprintf(dir, sizeof(dir), "/tmp/cp-fuzz-%d", (int)getpid());
        mkdir(dir, 0700);
    }
    snprintf(yaml, sizeof(yaml), "%s/c.yaml", dir);
    snprintf(map, sizeof(map), "%s/c.map", dir);
    write_yaml(yaml, data, ylen, map);
    write_file(map, nul ? nul + 1 : data, nul ? size - ylen - 1 : 0);
    cfg = cp_config_load(yaml, err);
    if (cfg == NULL && err[0] == '\0')
        msg_panic("refused without an error message");
    cp_config_free(cfg);
    return 0;
}
