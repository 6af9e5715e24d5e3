/*
 * spawn.c — run a configured command (notify.sendmail, the hold and
 * release commands) without a shell: the command line is split at spaces
 * and tabs, extra arguments are appended, `input` is written to its stdin,
 * and what it prints (stdout and stderr, first SPAWN_MAX_OUTPUT bytes) is
 * kept for the log. The command is killed after the timeout.
 *
 * Blocking: called on the outbox thread only, never on the loop thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "util/clock.h"

extern char **environ;

#define SPAWN_MAX_ARGS 32

static int
split(char *line, char **argv, int max)
{
    int n = 0;
    char *p = line;

    while (*p) {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (!*p)
            break;
        if (n == max)
            return -1;
        argv[n++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
    }
    return n;
}

static void
keep_output(int fd, char *out, size_t outsz, size_t *outlen)
{
    char buf[512];
    ssize_t n = read(fd, buf, sizeof(buf));

    if (n > 0 && *outlen + 1 < outsz) {
        size_t k = (size_t)n < outsz - 1 - *outlen ? (size_t)n
                                                   : outsz - 1 - *outlen;
        memcpy(out + *outlen, buf, k);
        *outlen += k;
        out[*outlen] = '\0';
    }
}

int
spawn_run(const char *cmdline, const char *const *extra, const char *input,
          size_t inlen, uint64_t timeout_ms, char *out, size_t outsz)
{
    char line[1024], *argv[SPAWN_MAX_ARGS + 8];
    int in[2] = {-1, -1}, pout[2] = {-1, -1}, n, status = 0, rc = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t def;
    size_t outlen = 0, written = 0;
    uint64_t deadline = clock_mono_us() + timeout_ms * 1000;
    bool out_open = true, exited = false;
    pid_t pid;

    out[0] = '\0';
    snprintf(line, sizeof(line), "%s", cmdline);
    if ((n = split(line, argv, SPAWN_MAX_ARGS)) <= 0) {
        snprintf(out, outsz, "empty or too long command");
        return -1;
    }
    for (int i = 0; extra && extra[i] && i < 7; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0) {
        snprintf(out, outsz, "pipe: %s", strerror(errno));
        goto done;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 2);
    /* the daemon ignores SIGPIPE; the command gets the default back */
    posix_spawnattr_init(&attr);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    errno = posix_spawn(&pid, argv[0], &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (errno != 0) {
        snprintf(out, outsz, "%s: %s", argv[0], strerror(errno));
        goto done;
    }
    close(in[0]);
    close(pout[1]);
    in[0] = pout[1] = -1;
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    if (inlen == 0) {
        close(in[1]);
        in[1] = -1;
    }
    while (!exited) {
        struct pollfd p[2];
        int np = 0, left;
        uint64_t now = clock_mono_us();

        if (now >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            snprintf(out + outlen, outsz - outlen, "%stimed out after %llu ms",
                     outlen ? "; " : "", (unsigned long long)timeout_ms);
            goto done;
        }
        left = (int)((deadline - now) / 1000) + 1;
        if (in[1] >= 0)
            p[np++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
        if (out_open)
            p[np++] = (struct pollfd){.fd = pout[0], .events = POLLIN};
        if (np == 0) {
            /* all written and read: wait for the exit */
            if (waitpid(pid, &status, WNOHANG) == pid)
                exited = true;
            else
                poll(NULL, 0, left < 20 ? left : 20);
            continue;
        }
        if (poll(p, (nfds_t)np, left) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < np; i++) {
            if (p[i].fd == in[1] && p[i].revents) {
                ssize_t w = write(in[1], input + written, inlen - written);

                if (w > 0)
                    written += (size_t)w;
                if ((w < 0 && errno != EAGAIN && errno != EINTR) ||
                    written == inlen) {
                    close(in[1]); /* EPIPE: the command stopped reading */
                    in[1] = -1;
                }
            } else if (p[i].fd == pout[0] && p[i].revents) {
                size_t before = outlen;
                char probe;

                if (outlen + 1 < outsz)
                    keep_output(pout[0], out, outsz, &outlen);
                if (outlen == before &&
                    (outlen + 1 >= outsz ? read(pout[0], &probe, 1) : 0) <= 0)
                    out_open = false; /* EOF (or output beyond the cap) */
            }
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        rc = 0;
    } else {
        size_t l = strlen(out);

        while (l > 0 && (out[l - 1] == '\n' || out[l - 1] == '\r'))
            out[--l] = '\0';
        if (WIFEXITED(status))
            snprintf(out + l, outsz - l, "%sexit status %d", l ? "; " : "",
                     WEXITSTATUS(status));
        else
            snprintf(out + l, outsz - l, "%skilled by signal %d",
                     l ? "; " : "", WTERMSIG(status));
    }
done:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (pout[i] >= 0)
            close(pout[i]);
    }
    return rc;
}
