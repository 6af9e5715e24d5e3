/*
 * milter-bound.c — the do-nothing milter: the upper bound for
 * bench/milter-load.c. It negotiates (no steps skipped, no actions) and
 * answers CONTINUE to every command that expects a reply, on a unix
 * socket, one thread per connection (blocking I/O: the cheapest server
 * there is for a handful of long-lived connections).
 *
 *   milter-bound SOCKET
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int
read_all(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);

        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void *
serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static char buf[1 << 20];
    char *b = malloc(1 << 20);
    static const char cont[5] = {0, 0, 0, 1, 'c'};
    static const char opt[17] = {0, 0, 0, 13, 'O', 0, 0, 0, 6,
                                 0, 0, 0, 0,  0,   0, 0, 0};

    (void)buf;
    for (;;) {
        char h[5];
        uint32_t len;

        if (read_all(fd, h, 5) < 0)
            break;
        len = (uint32_t)(unsigned char)h[0] << 24 |
              (uint32_t)(unsigned char)h[1] << 16 |
              (uint32_t)(unsigned char)h[2] << 8 | (unsigned char)h[3];
        if (len == 0 || len - 1 > (1 << 20) || read_all(fd, b, len - 1) < 0)
            break;
        if (h[4] == 'O') {
            if (write(fd, opt, sizeof(opt)) != sizeof(opt))
                break;
        } else if (h[4] == 'Q') {
            break;
        } else if (h[4] != 'D' && h[4] != 'A' && h[4] != 'K') {
            if (write(fd, cont, sizeof(cont)) != sizeof(cont))
                break;
        }
    }
    free(b);
    close(fd);
    return NULL;
}

int
main(int argc, char **argv)
{
    struct sockaddr_un sa;
    int s;

    if (argc != 2)
        return 2;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[1]);
    unlink(argv[1]);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(s, 128) < 0) {
        perror(argv[1]);
        return 1;
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        pthread_t t;

        if (c < 0)
            continue;
        pthread_create(&t, NULL, serve, (void *)(intptr_t)c);
        pthread_detach(t);
    }
}
