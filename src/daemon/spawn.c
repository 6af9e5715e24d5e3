/*
 * spawn.c — run a configured command (notify.sendmail, the hold and
 * release commands) without a shell: the command line is split at spaces
 * and tabs, extra arguments are appended, `input` is written to its stdin,
 * and what it prints (stdout and stderr, first SPAWN_MAX_OUTPUT bytes) is
 * kept for the log. The command is killed after the timeout, or when
 * poll() fails (the run then fails with the reason); either way it is
 * reaped before spawn_run returns, so no zombie is left behind.
 *
 * Steps: child_start (pipes, posix_spawn), child_pump (stdin out, output
 * in, until the exit or the deadline), child_kill (SIGKILL, waitpid),
 * exit_report (status → return value and log text).
 *
 * Blocking: called on the outbox thread only, never on the loop thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
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

/* What the command printed: the first outsz - 1 bytes, NUL-terminated. */
struct output {
    char *buf;
    size_t size, len;
};

/* Append to the output (truncated at the cap). */
static void output_add(struct output *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
output_add(struct output *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    o->len = strlen(o->buf); /* the output may hold a NUL */
    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, o->size - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len +=
            (size_t)n < o->size - o->len ? (size_t)n : o->size - 1 - o->len;
}

/* A child with pipes to its stdin and from its stdout and stderr; -1: a
 * descriptor closed (stdin all written, output at EOF). */
struct child {
    pid_t pid;
    int in, out;
};

static void
child_close(struct child *ch)
{
    if (ch->in >= 0)
        close(ch->in);
    if (ch->out >= 0)
        close(ch->out);
    ch->in = ch->out = -1;
}

/* Start argv[0] (no PATH search) with the pipes. 0, or -1 with the reason
 * in `o` (nothing left open). */
static int
child_start(char *const *argv, struct child *ch, struct output *o)
{
    int in[2] = {-1, -1}, pout[2] = {-1, -1}, rc;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t def;

    ch->pid = -1;
    ch->in = ch->out = -1;
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0) {
        output_add(o, "pipe: %s", strerror(errno));
        rc = -1;
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
    rc = posix_spawn(&ch->pid, argv[0], &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        output_add(o, "%s: %s", argv[0], strerror(rc));
        rc = -1;
        goto done;
    }
    ch->in = in[1];
    ch->out = pout[0];
    in[1] = pout[0] = -1;
    fcntl(ch->in, F_SETFL, O_NONBLOCK);
done:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (pout[i] >= 0)
            close(pout[i]);
    }
    return rc;
}

/* Write what the child's stdin takes now; close it when all is written or
 * the child stopped reading (EPIPE). */
static void
child_feed(struct child *ch, const char *input, size_t inlen, size_t *written)
{
    ssize_t w = write(ch->in, input + *written, inlen - *written);

    if (w > 0)
        *written += (size_t)w;
    if ((w < 0 && errno != EAGAIN && errno != EINTR) || *written == inlen) {
        close(ch->in);
        ch->in = -1;
    }
}

/* Read what the child printed: kept up to the cap, then read and dropped
 * (the child must not block on a full pipe); closed at EOF. */
static void
child_drain(struct child *ch, struct output *o)
{
    char buf[512];
    ssize_t n = read(ch->out, buf, sizeof(buf));
    size_t room = o->size - 1 - o->len;

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close(ch->out);
        ch->out = -1;
        return;
    }
    if (room > 0) {
        size_t k = (size_t)n < room ? (size_t)n : room;

        memcpy(o->buf + o->len, buf, k);
        o->len += k;
        o->buf[o->len] = '\0';
    }
}

enum pump { PUMP_EXITED, PUMP_TIMEOUT, PUMP_ERROR };

/*
 * Feed stdin, collect the output and wait for the exit, until `deadline`
 * (monotonic, us). PUMP_EXITED with the wait status in *status; else the
 * child still runs, and PUMP_ERROR has the reason in `o` (poll failed).
 */
static enum pump
child_pump(struct child *ch, const char *input, size_t inlen, uint64_t deadline,
           struct output *o, int *status)
{
    size_t written = 0;

    for (;;) {
        struct pollfd p[2];
        int np = 0, left;
        uint64_t now = clock_mono_us();

        if (now >= deadline)
            return PUMP_TIMEOUT;
        left = (int)((deadline - now) / 1000) + 1;
        if (ch->in >= 0)
            p[np++] = (struct pollfd){.fd = ch->in, .events = POLLOUT};
        if (ch->out >= 0)
            p[np++] = (struct pollfd){.fd = ch->out, .events = POLLIN};
        if (np == 0) {
            /* all written and read: wait for the exit */
            if (waitpid(ch->pid, status, WNOHANG) == ch->pid)
                return PUMP_EXITED;
            poll(NULL, 0, left < 20 ? left : 20);
            continue;
        }
        if (poll(p, (nfds_t)np, left) < 0) {
            if (errno == EINTR)
                continue;
            output_add(o, "%spoll: %s", o->buf[0] ? "; " : "", strerror(errno));
            return PUMP_ERROR;
        }
        for (int i = 0; i < np; i++) {
            if (p[i].revents == 0)
                continue;
            if (p[i].fd == ch->in)
                child_feed(ch, input, inlen, &written);
            else
                child_drain(ch, o);
        }
    }
}

/* Kill the child and reap it (no zombie left behind). */
static void
child_kill(struct child *ch)
{
    kill(ch->pid, SIGKILL);
    while (waitpid(ch->pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* 0 if the command exited 0; else -1 with how it ended in `o` (after its
 * output, trailing newlines trimmed). */
static int
exit_report(int status, struct output *o)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    o->len = strlen(o->buf);
    while (o->len > 0 &&
           (o->buf[o->len - 1] == '\n' || o->buf[o->len - 1] == '\r'))
        o->buf[--o->len] = '\0';
    if (WIFEXITED(status))
        output_add(o, "%sexit status %d", o->buf[0] ? "; " : "",
                   WEXITSTATUS(status));
    else
        output_add(o, "%skilled by signal %d", o->buf[0] ? "; " : "",
                   WTERMSIG(status));
    return -1;
}

int
spawn_run(const char *cmdline, const char *const *extra, const char *input,
          size_t inlen, uint64_t timeout_ms, char *out, size_t outsz)
{
    char line[1024], *argv[SPAWN_MAX_ARGS + 8];
    struct output o = {out, outsz, 0};
    uint64_t deadline = clock_mono_us() + timeout_ms * 1000;
    struct child ch;
    enum pump how;
    int n, status = 0;

    out[0] = '\0';
    snprintf(line, sizeof(line), "%s", cmdline);
    if ((n = split(line, argv, SPAWN_MAX_ARGS)) <= 0) {
        output_add(&o, "empty or too long command");
        return -1;
    }
    for (int i = 0; extra && extra[i] && i < 7; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    if (child_start(argv, &ch, &o) < 0)
        return -1;
    if (inlen == 0) {
        close(ch.in);
        ch.in = -1;
    }
    how = child_pump(&ch, input, inlen, deadline, &o, &status);
    child_close(&ch);
    if (how == PUMP_EXITED)
        return exit_report(status, &o);
    child_kill(&ch);
    if (how == PUMP_TIMEOUT)
        output_add(&o, "%stimed out after %llu ms", out[0] ? "; " : "",
                   (unsigned long long)timeout_ms);
    return -1;
}
