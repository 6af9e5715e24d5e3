/* maillog.h — Postfix mail.log parser for `chokepoint replay` (being written). */
#ifndef CP_CORE_MAILLOG_H
#define CP_CORE_MAILLOG_H
#endif
