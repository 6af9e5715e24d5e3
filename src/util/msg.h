/*
 * msg.h — diagnostics for chokepoint: one place that decides where log lines
 * go (stderr for journald, or syslog) and how severe they are.
 *
 * The three kinds of failure (doc/design.md): msg_warn for a peer's error
 * (logged, answered, maybe closed), msg_fatal for an environment error (exit
 * at start-up), msg_panic for a bug (abort). Untrusted text must go through
 * str_escape() (util/strbuf.h) before it reaches these functions.
 *
 * Thread safety: the loop thread logs; worker threads may call msg_warn and
 * msg_error too (each call is a single write(2) or syslog(3)).
 */
#ifndef CP_UTIL_MSG_H
#define CP_UTIL_MSG_H

#include <stdarg.h>
#include <stdbool.h>

enum msg_level { MSG_DEBUG, MSG_INFO, MSG_WARN, MSG_ERROR };

/* Set the program name and sink. Safe to call again (e.g. on reload). */
void msg_init(const char *progname, bool use_syslog, enum msg_level level);
void msg_set_level(enum msg_level level);
bool msg_enabled(enum msg_level level);

void msg_vlog(enum msg_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
void msg_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Environment error: log and exit(1). */
void msg_fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
/* Bug: log and abort(). */
void msg_panic(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#endif
