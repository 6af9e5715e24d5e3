/*
 * sdnotify.c — tell systemd how the daemon is (sd_notify(3), Type=notify):
 * READY=1 once it answers, RELOADING=1 ... READY=1 around a reload,
 * STOPPING=1 at the stop, STATUS= lines for `systemctl status`. One
 * datagram to the unix socket named by $NOTIFY_SOCKET (an '@' first: the
 * abstract namespace); without it (not under systemd) nothing is sent.
 *
 * Hand-written rather than libsystemd's sd_notify(): the protocol is one
 * datagram, documented by systemd as stable and meant to be implemented
 * by daemons themselves, and the daemon would otherwise link libsystemd
 * for it alone. Thread: the loop thread.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/msg.h"

void
sd_state(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    char msg[512];
    socklen_t len;
    va_list ap;
    int fd, n;

    if (path == NULL || path[0] == '\0' ||
        strlen(path) >= sizeof(sa.sun_path) ||
        (path[0] != '/' && path[0] != '@'))
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return;
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
               len) < 0)
        msg_warn("NOTIFY_SOCKET %s: %s (systemd is not told %s)", path,
                 strerror(errno), strchr(msg, '\n') ? "the state" : msg);
    close(fd);
}
