/*
 * msg.c — log sink. Each message is formatted into a bounded stack buffer
 * (longer messages are truncated, never split) and written with one call,
 * so lines from different threads do not interleave.
 */
#include "util/msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#define MSG_MAX_LINE 4096

static const char *msg_progname = "chokepoint";
static bool msg_syslog;
static enum msg_level msg_min = MSG_INFO;

void
msg_init(const char *progname, bool use_syslog, enum msg_level level)
{
    if (msg_syslog && !use_syslog)
        closelog();
    msg_progname = progname;
    msg_min = level;
    if (use_syslog && !msg_syslog)
        openlog(progname, LOG_PID | LOG_NDELAY, LOG_MAIL);
    msg_syslog = use_syslog;
}

void
msg_set_level(enum msg_level level)
{
    msg_min = level;
}

bool
msg_enabled(enum msg_level level)
{
    return level >= msg_min;
}

void
msg_vlog(enum msg_level level, const char *fmt, va_list ap)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
    char line[MSG_MAX_LINE];
    int n;

    if (level < msg_min)
        return;
    if (msg_syslog) {
        vsnprintf(line, sizeof(line), fmt, ap);
        syslog(prio[level], "%s: %s", names[level], line);
        return;
    }
    n = snprintf(line, sizeof(line), "%s: %s: ", msg_progname, names[level]);
    if (n < 0 || (size_t)n >= sizeof(line) - 1)
        n = 0;
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    n = (int)strlen(line);
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to report it */
    }
}

#define MSG_FN(name, level)                                                    \
    void name(const char *fmt, ...)                                            \
    {                                                                          \
        va_list ap;                                                            \
        va_start(ap, fmt);                                                     \
        msg_vlog(level, fmt, ap);                                              \
        va_end(ap);                                                            \
    }

MSG_FN(msg_debug, MSG_DEBUG)
MSG_FN(msg_info, MSG_INFO)
MSG_FN(msg_warn, MSG_WARN)
MSG_FN(msg_error, MSG_ERROR)

void
msg_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    msg_vlog(MSG_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}

void
msg_panic(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    msg_vlog(MSG_ERROR, fmt, ap);
    va_end(ap);
    abort();
}
