/*
 * event.h — what the engine is asked about: one step of one SMTP
 * transaction, typed. Each front end builds it directly: the policy codec
 * (policy_event(), core/policy.h), the milter session, replay from the mail
 * log, and the simulator. Strings are borrowed (util/str.h) from whoever
 * built the event and must outlive the engine call; numbers are numbers,
 * already checked against the limits below.
 */
#ifndef CP_CORE_EVENT_H
#define CP_CORE_EVENT_H

#include <stdint.h>

#include "util/str.h"

enum cp_stage { CP_STAGE_RCPT, CP_STAGE_DATA, CP_STAGE_EOM, CP_STAGE_OTHER,
                CP_STAGE_CONTENT /* the milter, after END-OF-MESSAGE */ };

#define CP_MAX_SIZE (1ULL << 40)        /* bytes in one message */
#define CP_MAX_RECIPIENTS 1000000ULL    /* recipients of one message */

struct cp_event {
    enum cp_stage stage;
    struct str sasl_username;      /* absent or empty: not authenticated */
    struct str client_address;     /* the SMTP client's IP address */
    struct str helo_name, sender, recipient;
    struct str instance;           /* one message (Postfix's instance) */
    struct str queue_id;           /* END-OF-MESSAGE and after */
    struct str tls_protocol, tls_cipher; /* absent: plaintext */
    uint64_t size;            /* bytes: declared (RCPT; 0 if not given) or
                                 final (END-OF-MESSAGE) */
    uint64_t recipient_count; /* END-OF-MESSAGE: recipients accepted */
};

#endif
