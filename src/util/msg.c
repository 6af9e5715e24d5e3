/*
 * msg.c — log sink. Each message is formatted into a bounded stack buffer
 * (longer messages are truncated, never split) and written with one call,
 * so lines from different threads do not interleave.
 *
 * On stderr under systemd (JOURNAL_STREAM names our stderr), each line
 * starts with its priority as journald reads it ("<3>" error, "<4>"
 * warning, "<6>" info, "<7>" debug: sd-daemon(3)), so `journalctl -p
 * warning` finds the warnings; elsewhere lines are plain.
 */
#include "util/msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define MSG_MAX_LINE 4096

static const char *msg_progname = "chokepoint";
static bool msg_syslog;
static bool msg_journal; /* stderr is journald's stream */

/* JOURNAL_STREAM is "DEVICE:INODE" of the stream systemd connected. */
static bool
stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char *end;

    if (js == NULL || fstat(STDERR_FILENO, &st) < 0)
        return false;
    dev = strtoull(js, &end, 10);
    if (*end != ':')
        return false;
    ino = strtoull(end + 1, &end, 10);
    return *end == '\0' && dev == (unsigned long long)st.st_dev &&
           ino == (unsigned long long)st.st_ino;
}
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
    msg_journal = !use_syslog && stderr_is_journal();
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
    if (msg_journal)
        n = snprintf(line, sizeof(line), "<%d>%s: %s: ", prio[level],
                     msg_progname, names[level]);
    else
        n = snprintf(line, sizeof(line), "%s: %s: ", msg_progname,
                     names[level]);
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
