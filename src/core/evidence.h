/*
 * evidence.h — per-account evidence of compromise from the policy stream,
 * combined into one score: the sum of the log-likelihood ratios of the
 * signals observed (positive: more likely a compromised account, negative:
 * more likely its owner), fading with a half-life so that old evidence is
 * forgotten, and floored so that a long good history cannot buy unlimited
 * credit. doc/detection.md explains the signals and their weights.
 *
 * Pure: no I/O, no clock (the caller passes now_ms). One struct per active
 * account (see doc/performance.md for its size), owned by the store.
 */
#ifndef CP_CORE_EVIDENCE_H
#define CP_CORE_EVIDENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/policy.h"
#include "util/inet.h"

#define CP_EV_OWNED 4  /* envelope senders remembered as the account's */
#define CP_EV_DOMS 4   /* domains of its own senders remembered */
#define CP_EV_NETS 6   /* client networks (/16, IPv6 /32) it uses */
#define CP_EV_FRESH 8  /* unfamiliar networks used in the last hour */
#define CP_EV_BLOOM 4  /* 64-bit words of the recipient filter (256 bits) */
#define CP_EV_HELOS 4  /* HELO names remembered (the account's devices) */
#define CP_EV_TLS 2    /* TLS stacks remembered (protocol + cipher) */
/* uniform_size: one template for hours, to many recipients */
#define CP_EV_RUN_MSGS 20        /* messages in the run */
#define CP_EV_RUN_SPAN_S 10800   /* since the run started: 3 hours */
#define CP_EV_RUN_RCPT_BITS 12   /* of 32 sketch bits: about 16 recipients */
#define CP_EV_RUN_GAP_S 1800     /* and steady: the one before within 30 min */
/* rate_jump: an account with fewer than CP_EV_RATE_HOURS active hours
 * learned (a working day) has no baseline yet; it is compared with
 * CP_EV_RATE_NEW messages an hour */
#define CP_EV_RATE_HOURS 8
/* new_recipient: the owner's share of new recipients is learned over
 * about the last 1 / CP_EV_RCPT_RATE recipients */
#define CP_EV_RCPT_RATE 0.005
#define CP_EV_RATE_NEW 20

/* struct cp_evidence's msg_flags: the message whose recipients come in */
#define CP_EV_MSG_OWN 1u     /* from its own (or a colleague's) sender */
#define CP_EV_MSG_KNOWN_ONE 2u /* its first recipient is an address its
                                  mail or forwards went to, and no other
                                  came (yet) */
#define CP_EV_MSG_FORGED 4u  /* another's sender to that address: a
                                forward, unless another recipient follows
                                (then a forged_sender after all) */

struct cp_evidence {
    int64_t t_ms;                 /* last update (decay reference) */
    float score;
    float hourly_mean;            /* messages per active hour, EWMA */
    float msg_rcpt;               /* recipient evidence in this message */
    uint8_t msg_flags;            /* this message: CP_EV_MSG_* */
    uint32_t hour;                /* hour index of hour_count */
    uint16_t hour_count;
    uint8_t owned_n[CP_EV_OWNED];
    uint32_t owned[CP_EV_OWNED];  /* sender hashes */
    uint32_t odom[CP_EV_DOMS];    /* domains of owned senders (hashes) */
    uint8_t odom_n[CP_EV_DOMS];   /* owned messages from each */
    uint64_t local_seen[2];       /* local parts of its own and colleagues'
                                     addresses (a 2 x 2-bit filter) */
    uint32_t nets[CP_EV_NETS];    /* client networks (/16, /32) learned */
    uint8_t nets_n[CP_EV_NETS];   /* messages from each (saturates) */
    uint8_t nets_days[CP_EV_NETS]; /* days each was used on (saturates) */
    uint16_t nets_day[CP_EV_NETS]; /* the last of them (days, mod 2^16) */
    uint32_t fresh[CP_EV_FRESH];  /* unfamiliar networks used lately */
    uint32_t fresh_s[CP_EV_FRESH]; /* when each was used, seconds */
    uint32_t fresh_who[CP_EV_FRESH]; /* by whom: the account's own (or a
                                        colleague's) sender; 0: another */
    uint64_t bloom[CP_EV_BLOOM];  /* recipients mailed */
    float rcpt_n, rcpt_new;       /* recipients learned while clean, and
                                     of them new (fading averages) */
    float sig[CP_SIG_COUNT];      /* each signal's share of the score */
    uint16_t fired[CP_SIG_COUNT]; /* times each signal fired (saturates) */
    uint32_t listed_s;            /* last dnsbl evidence, seconds */
    uint32_t helo[CP_EV_HELOS];   /* HELO hashes (IP literals as one) */
    uint64_t helo_seen;           /* every HELO learned (a 2-bit filter):
                                     a shared login's many devices */
    uint32_t tls_seen;            /* every TLS stack learned, likewise */
    uint8_t active_hours;         /* hours with mail in hourly_mean
                                     (saturates) */
    uint8_t helo_n[CP_EV_HELOS];  /* messages seen with each */
    uint32_t hours_used;          /* bit per hour of day (UTC) with mail */
    uint16_t msgs_learned;        /* messages learned from (saturates) */
    uint32_t last_s[CP_SIG_COUNT]; /* when each signal last fired, s */
    uint32_t tls[CP_EV_TLS];      /* TLS stack hashes (1: plaintext) */
    uint8_t tls_n[CP_EV_TLS];     /* messages seen with each */
    uint8_t size_n;               /* messages in the size run (saturates) */
    uint8_t size_miss;            /* other sizes since the run started */
    uint32_t size_lo, size_hi;    /* smallest and largest size in the run */
    uint32_t run_start_s;         /* when the size run started, seconds */
    uint32_t run_rcpts;           /* recipients of the run: a bit per hash */
    uint32_t run_last_s;          /* the run's latest message, seconds */
    /* format 4: the hosts (a bit each, struct cp_ev_input's host_bit)
     * that used each remembered entry: one used on two hosts of a fleet
     * counts as used twice (each host learns from its share of the mail,
     * and a merge of counts takes the larger, never the sum) */
    uint8_t owned_h[CP_EV_OWNED];
    uint8_t odom_h[CP_EV_DOMS];
    uint8_t helo_h[CP_EV_HELOS];
    uint8_t tls_h[CP_EV_TLS];
    uint32_t fleet_sig;           /* fleet mode: cp_evidence_habits_sig()
                                     when this host last gave its habits */
    uint32_t fleet_ver;           /* fleet mode: the version of the fleet's
                                     suspicion this host has */
    uint8_t nets_h[CP_EV_NETS];   /* the hosts that saw each network */
};

/* Was the recipient delivered to by this account before (the engine's
 * table, fed by the mail log)? Untracked: no table (no mail log), the
 * account's own recipient filter decides. */
enum cp_rcpt_seen { CP_RCPT_UNTRACKED, CP_RCPT_NEW, CP_RCPT_DELIVERED };

struct cp_ev_input {
    int64_t now_ms;
    bool new_message;             /* first RCPT of a message */
    bool sasl;
    struct str login, sender, recipient, helo;
    struct str tls_protocol, tls_cipher; /* absent: plaintext */
    const struct inet_addr *client; /* NULL if unknown */
    bool refused;                 /* the account's state refuses this mail */
    const struct cp_customer *cust; /* its customer in the map, or NULL:
                                       its domains are owned */
    struct cp_evidence *shared;   /* the customer's record (or NULL): the
                                     senders its logins learned, shared */
    bool rcpt_forwarded;          /* an earlier forward went to it (the
                                     engine's table of forwards) */
    enum cp_rcpt_seen rcpt_seen;  /* from the engine's table of
                                     recipients delivered to */
    uint8_t host_bit;             /* fleet mode: this host's (0: 1) */
};

/* Is `sender` one the account (ev), or its customer's logins (shared, may
 * be NULL), learned as their own: used at least twice while clean? */
bool cp_evidence_knows_sender(const struct cp_evidence *ev,
                              const struct cp_evidence *shared,
                              struct str sender);

/*
 * Add one RCPT's evidence. Returns the score after it; *fired gets a bit
 * per signal that fired.
 */
double cp_evidence_rcpt(struct cp_evidence *ev, const struct cp_detection *det,
                        const struct cp_ev_input *in, uint32_t *fired);
/*
 * END-OF-MESSAGE: the message's final size (uniform_size). Returns the
 * score after it.
 */
double cp_evidence_eom(struct cp_evidence *ev, const struct cp_detection *det,
                       uint64_t size, int64_t now_ms, uint32_t *fired);
/*
 * The message's content, from the milter: `campaign` if its fingerprint
 * was sent by content.campaign_accounts accounts or more (signal
 * campaign). Returns the score after it.
 */
double cp_evidence_content(struct cp_evidence *ev,
                           const struct cp_detection *det, bool campaign,
                           int64_t now_ms, uint32_t *fired);
/*
 * Add one delivery outcome of a message (from the mail log): signal
 * bad_recipient, remote_reject or delivered, times `scale`. `*msg` is the
 * message's delivery evidence so far (kept by the caller with its queue
 * id): a message's outcomes count at most +2 and -0.25 in all, so one big
 * message to a stale list cannot decide alone: the message's net
 * evidence is clamped, so its deliveries weigh against its bounces.
 * Returns the score after.
 */
double cp_evidence_outcome(struct cp_evidence *ev,
                           const struct cp_detection *det, enum cp_signal s,
                           double scale, float *msg, int64_t now_ms,
                           uint32_t *fired);
/*
 * The client address is on an infected-host list (DNSBL answer, which
 * arrives after the reply): counts at most once an hour per account, since
 * repeated look-ups of one listing are one fact. Returns the score after.
 */
double cp_evidence_listed(struct cp_evidence *ev,
                          const struct cp_detection *det, int64_t now_ms,
                          uint32_t *fired);
/*
 * Keep the habits (senders, recipients, networks, HELOs, TLS stacks,
 * hours, the usual rate, the size run), forget the suspicion (score,
 * what each signal added and when): what `chokepoint learn` stores.
 */
void cp_evidence_habits_only(struct cp_evidence *ev);
/*
 * The signals that back a block (cp_lifecycle_step's `signals`): the
 * corroboration below — except that an account still learning (fewer
 * than detection.learning messages learned while clean) has at most one
 * unless delivery evidence (bounces, remote refusals) adds watch_at or
 * more: what a new account does is not yet compared with habits, so only
 * what the receivers said blocks it; it can still be watched and
 * throttled.
 */
int cp_evidence_block_signals(const struct cp_evidence *ev,
                              const struct cp_detection *det);
/* How many different signals each raised the score by at least 1 (as of
 * the last update): a block needs corroboration by two or more, campaign
 * not counted. */
int cp_evidence_corroboration(const struct cp_evidence *ev);
/* The score as of now_ms (faded), without changing anything. */
double cp_evidence_score(const struct cp_evidence *ev,
                         const struct cp_detection *det, int64_t now_ms);

/*
 * Fleet mode (store.backend: redis): hosts share an account's suspicion
 * (the score and each signal's share, times and last time; not the
 * habits) through Redis. A host adds up what its evidence gained since it
 * last told the fleet, signal by signal (cp_evidence_gained: the
 * difference from a mark taken before an update), sends it with the
 * account's next decision, and takes the fleet's sum back when it is
 * suspicious (cp_evidence_adopt). Shares fade like the evidence itself.
 */
struct cp_ev_delta {
    int64_t t_ms;                   /* the fade reference (0: empty) */
    float sig[CP_SIG_COUNT];        /* shares added */
    uint16_t fired[CP_SIG_COUNT];   /* times fired (saturates) */
    uint32_t last_s[CP_SIG_COUNT];  /* when each last fired, s (0: not) */
};

/* The fleet's sum, as Redis keeps it (at t_ms, Redis's clock). */
struct cp_ev_shared {
    int64_t t_ms;
    double score;
    float sig[CP_SIG_COUNT];
    uint32_t fired[CP_SIG_COUNT];
    uint32_t last_s[CP_SIG_COUNT];
};

/* The network (/16, IPv6 /32) of a client address, as the evidence
 * remembers it (never 0). */
uint32_t cp_evidence_net(const struct inet_addr *a);
/* The evidence's signals now (before an update), as a mark. */
void cp_evidence_mark(const struct cp_evidence *ev, struct cp_ev_delta *m);
/* What ev gained since mark m, added to *acc (faded to ev's time first).
 * True if it gained anything. */
bool cp_evidence_gained(const struct cp_ev_delta *m,
                        const struct cp_evidence *ev,
                        const struct cp_detection *det,
                        struct cp_ev_delta *acc);
/* d faded to time `to` (its reference becomes `to` if later). */
void cp_ev_delta_fade(struct cp_ev_delta *d, const struct cp_detection *det,
                      int64_t to);
/* b added to a (a faded to b's time, or b to a's). */
void cp_ev_delta_add(struct cp_ev_delta *a, const struct cp_ev_delta *b,
                     const struct cp_detection *det);
/* Is a delta worth telling: does it raise the score, or a signal's share,
 * by `up` or more, or lower the score by `down` or more? */
bool cp_ev_delta_news(const struct cp_ev_delta *d, double up, double down);
/* The local evidence becomes the fleet's sum plus what this host gained
 * and has not told yet (`pending`, or NULL); the habits stay this host's. */
void cp_evidence_adopt(struct cp_evidence *ev, const struct cp_detection *det,
                       const struct cp_ev_shared *sh,
                       const struct cp_ev_delta *pending, int64_t now_ms);
/*
 * Fleet mode: the habits another host learned of the account (its
 * evidence record `o`) added to this host's: senders, domains, networks,
 * HELOs and TLS stacks by their use counts (the larger count of each,
 * the most used kept), the filters (recipients, local parts, HELOs, TLS
 * stacks, hours of day) joined, the owner's share of new recipients and
 * the messages learned from taken from the record that learned more.
 * Idempotent: merging a record twice changes nothing more. Not merged:
 * the suspicion (cp_evidence_adopt), this host's hour and usual rate
 * (compared with its own share of the mail), the size run.
 */
void cp_evidence_merge_habits(struct cp_evidence *ev,
                              const struct cp_evidence *o);
/* What the habits know, as a hash: the entries remembered (with whether
 * they count as used twice, and their hosts), the filters, the hours; not
 * the use counts beyond that. It changes when a habit is learned, so a
 * host gives its habits to the fleet when they have news. */
uint32_t cp_evidence_habits_sig(const struct cp_evidence *ev);

/*
 * The evidence as stored by checkpoints: a header (magic, CP_EV_FORMAT,
 * the struct's size) and the struct's bytes. Bump CP_EV_FORMAT whenever
 * struct cp_evidence changes meaning; a stored record of another format
 * or size is not read back (the account starts with clean evidence, as
 * before evidence was stored). unpack also refuses non-finite numbers.
 */
#define CP_EV_FORMAT 4 /* 2: signal campaign; 3: networks learned, sender
                          domains, stale_recipient; 4: the hosts of each
                          remembered entry (a record of format 3 is read,
                          with none) */
#define CP_EV_PACKED (8 + sizeof(struct cp_evidence))
void cp_evidence_pack(const struct cp_evidence *ev, unsigned char *out);
bool cp_evidence_unpack(struct cp_evidence *ev, const void *in, size_t len);

/* The signals that fired (times > 0), largest share first (by size):
 * their indexes in order[]; returns how many. */
size_t cp_signals_ranked(const float share[CP_SIG_COUNT],
                         const uint16_t times[CP_SIG_COUNT],
                         uint8_t order[CP_SIG_COUNT]);
/*
 * "score 12.3: forged_sender +8.0 (8x), new_recipient +3.1 (31x), ..." —
 * the signals that raised the score, largest first, for logs and reports.
 */
void cp_evidence_explain(const struct cp_evidence *ev,
                         const struct cp_detection *det, int64_t now_ms,
                         char *out, size_t n);

/*
 * The evidence in detail, for `chokepoint show`: per signal that fired, its
 * weight, how often, its share of the score now and when it last fired;
 * then the learned baselines the signals compare against (the usual hour,
 * senders, HELOs, hours of day). JSON members (",\"signals\":[...],...")
 * or text lines.
 */
struct strbuf;
void cp_evidence_detail(const struct cp_evidence *ev,
                        const struct cp_detection *det, int64_t now_ms,
                        struct strbuf *o, bool json);

#endif
