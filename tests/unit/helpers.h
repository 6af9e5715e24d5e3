/* helpers.h — shared by the unit tests: write a temporary file. */
#ifndef CP_TEST_HELPERS_H
#define CP_TEST_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Write `text` to a new temporary file; returns its path (static buffer
 * per slot 0..3). */
static inline const char *
tmpfile_with(int slot, const char *text)
{
    static char paths[4][64];
    int fd;

    snprintf(paths[slot], sizeof(paths[slot]), "/tmp/cp-unit-XXXXXX");
    fd = mkstemp(paths[slot]);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        abort();
    close(fd);
    return paths[slot];
}

#endif
