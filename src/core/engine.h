/*
 * engine.h — the policy decision engine: event in (core/event.h), decision
 * out. No I/O, no clock of its own (the caller passes `now_ms`, so the
 * simulator can run it on a virtual clock), no logging (the decision
 * carries its explanation), no calls back into its caller.
 *
 * State changes: every entry point that takes a struct cp_decision may move
 * one account's state; it then says so in the decision (state_changed,
 * prev_state, state, id) and the caller applies the change (the daemon
 * makes it durable and runs the incident, src/daemon/incident.c) before it
 * answers, so no reply depends on a state a crash could forget.
 *
 * Two-phase accounting: the first RCPT of a message (`instance`) reserves
 * one message and its declared size, every RCPT one recipient and maybe one
 * new domain; END-OF-MESSAGE releases the reservation and charges Postfix's
 * final recipient_count and size; a message that never gets there is
 * released by cp_engine_expire() after accounting.reservation_timeout.
 *
 * Ownership: the engine borrows the config and the store; the caller keeps
 * both alive and swaps the config with cp_engine_set_config().
 * Thread: the loop thread only.
 */
#ifndef CP_CORE_ENGINE_H
#define CP_CORE_ENGINE_H

#include <stdint.h>

#include "core/config.h"
#include "core/event.h"
#include "core/fingerprint.h"
#include "core/identity.h"
#include "core/reply.h"
#include "core/store.h"
#include "util/agemap.h"
#include "util/tagset.h"

struct cp_stats {
    uint64_t requests;
    uint64_t by_action[CP_ACT_COUNT];     /* what was answered */
    uint64_t shadow_would[CP_ACT_COUNT];  /* what shadow mode suppressed */
    uint64_t identity_errors;
    uint64_t pending_expired;             /* released after the timeout */
    uint64_t pending_evicted;             /* released early: table full */
    uint64_t pending_abandoned;           /* released: the transaction
                                             ended without END-OF-MESSAGE */
    uint64_t settled;                     /* messages charged at EOM */
    uint64_t outcomes;                    /* delivery outcomes attributed */
    uint64_t outcomes_unknown;            /* for a queue id not recorded */
    uint64_t outcomes_stale;              /* bounces to an address the
                                             account had delivered to */
    uint64_t outcomes_relayed;            /* of a reply or a forward
                                             (CP_QUEUED_*) */
    uint64_t content;                     /* fingerprints from the milter */
    uint64_t campaign;                    /* of them part of a campaign */
    uint64_t campaign_refused;            /* refused for it (a spam run) */
};

struct cp_pending;
struct cp_decision;

struct cp_ev_delta;

struct cp_engine {
    const struct cp_config *cfg;
    struct cp_store *store;
    struct agemap pending;                /* instance → struct cp_pending */
    struct agemap queued;                 /* queue id → struct cp_queued */
    /* the queue-id journal (cp_engine_queued_journal), if enabled */
    bool q_journal;
    uint64_t q_seq, q_seq_written;        /* last recorded, last stored */
    struct cp_stats stats;
    struct cp_campaigns *camp;            /* content: (first use) */
    /* (account, recipient) pairs the next hop accepted: a later bounce
     * to one is a list going stale (delivery.max_recipients; first use) */
    struct tagset delivered;
    /* (account, recipient) pairs an earlier forward (CP_QUEUED_OTHERS)
     * was delivered to or refused at for its content: where the
     * account's forwards go (delivery.max_recipients / 16; first use;
     * not stored) */
    struct tagset forwards;
    /* learning (chokepoint learn, a warm start): requests add evidence
     * (the habits: senders, recipients, networks, hours, ...) and record
     * queue ids for delivery outcomes; nothing is charged, no state
     * changes, every answer is DUNNO */
    bool learning;
    bool eom_seen; /* an END-OF-MESSAGE request was decided (cp_session) */
    uint8_t host_bit; /* fleet mode: this host's bit in the hosts of a
                         remembered habit (struct cp_ev_input); 0: 1 */
    /* fleet mode: a reservation given back outside a decision (the
     * transaction ended, expired, was evicted) is given back in the shared
     * store too; NULL: no shared store */
    void (*share_release)(void *arg, const struct cp_meter_op *op);
    /* fleet mode: an END-OF-MESSAGE settled within its reservation was
     * decided here (nothing in it is checked: only a state could refuse
     * it, and this host's copy of the state is the one its RCPT brought);
     * the operation (its reservation given back, its final costs) goes to
     * the shared store with no answer awaited; NULL: the shared store
     * decides every END-OF-MESSAGE */
    void (*share_settle)(void *arg, const struct cp_meter_op *op);
    /* fleet mode: what an account's evidence gained in an update, signal
     * by signal, for the fleet's sum; NULL: no shared store */
    void (*share_evidence)(void *arg, const char *dkey, size_t dkeylen,
                           const struct cp_detection *det,
                           const struct cp_ev_delta *gain);
    /* fleet mode: a fingerprinted message of account acct went into the
     * campaign table (bit: the account's bit in its bands' senders'
     * sketches; sent, bad 0), or a delivery outcome of one (bit 0, acct
     * 0, sent 1, bad 1 if refused), at now_ms; NULL: the table is this
     * host's */
    void (*share_campaign)(void *arg, const struct cp_fp *fp, uint64_t bit,
                           uint32_t acct, unsigned sent, unsigned bad,
                           int64_t now_ms);
    void *share_arg;
};

#define CP_TEXT_MAX 320
#define CP_QUEUE_ID_MAX 32 /* bytes; Postfix long queue ids are <= 17 */

struct cp_decision {
    enum cp_stage stage;
    enum cp_action action;   /* what is answered */
    enum cp_action verdict;  /* what the rules call for */
    bool shadow;             /* verdict suppressed by shadow mode */
    bool has_rule;
    struct cp_rule rule;     /* the rule that fired (copy: outlives reloads) */
    double value;            /* level before this request's cost */
    double cost, limit, retry_s;
    struct cp_identity id;
    /* the reply (core/reply.h); each protocol formats it for itself */
    uint16_t code;           /* SMTP reply code of a refusal (451, 550);
                                0: none */
    char status[8];          /* enhanced status code ("4.7.1"), or "" */
    char text[CP_TEXT_MAX];  /* the words (a FILTER: the transport) */
    /* compromise detection (doc/detection.md) */
    bool detected;           /* evidence was gathered for this request */
    bool by_state;           /* the account's state decided the verdict */
    bool state_changed;
    bool shared;             /* fleet mode: the change is in the shared
                                store already (cp_engine_resume) */
    bool fleet_moved;        /* fleet mode: another host changed the
                                state: it was fleet_from here */
    uint8_t fleet_from;
    uint8_t state, prev_state; /* enum cp_state of the state's record
                                  (id.dkey: the login, the address, or
                                  an operator's customer) */
    uint8_t cust_state;      /* the customer's own record (id.key), when
                                that is another: a person's MANUAL_HOLD
                                or ALLOWED covers all its logins */
    double score;
    uint32_t fired;          /* bit per enum cp_signal fired */
};

/* The state that decides an account's mail, from its own record's state
 * and its customer's (NORMAL when that is the same record): the
 * customer's held (MANUAL_HOLD, BLOCKED) or allowed state, else its own. */
int cp_state_deciding(int own, int customer);
/* The same for d's account (d->state, d->cust_state). */
int cp_decision_state(const struct cp_decision *d);
/* What an account's limits are multiplied by in `state`: WATCH and
 * PROBATION apply detection.watch_factor, every other state 1. */
double cp_limit_scale(const struct cp_config *cfg, int state);

void cp_engine_init(struct cp_engine *e, const struct cp_config *cfg,
                    struct cp_store *store);
/* Frees pending reservations without releasing them (shutdown). */
void cp_engine_fini(struct cp_engine *e);
void cp_engine_set_config(struct cp_engine *e, const struct cp_config *cfg);

/* Decide one step of a transaction. Returns 0, or CP_DECIDE_NO_IDENTITY
 * if no identity could be derived (nothing is decided or charged and
 * d->action is DUNNO). */
#define CP_DECIDE_NO_IDENTITY (-1)
int cp_engine_decide(struct cp_engine *e, const struct cp_event *ev,
                     int64_t now_ms, struct cp_decision *d);

/*
 * Fleet mode: a decision that meters waits for the shared store.
 *
 * cp_engine_decide_async() does what cp_engine_decide() does up to the
 * store operation (identity, detection on the local evidence, which may
 * move the account's state), then returns CP_DECIDE_AWAIT with `aw`
 * filled: the operation with its limits unscaled, what the account's
 * state does to it, and the state change detection made. The caller runs
 * that in the shared store in one step (store/redis.c) and calls
 * cp_engine_resume() with the store's answer, or with NULL when the
 * store could not answer in time: the decision is then made from the
 * local copy (the account table), as the embedded store would.
 *
 * Between the two calls the caller keeps `ev`'s strings, `d` and `aw`
 * unchanged, and the configuration `aw->op.slots` points into alive.
 */
#define CP_DECIDE_AWAIT 1

struct cp_await {
    struct cp_meter_op op; /* caps and rates unscaled; op.key: d->id.key */
    double cost[CP_METRIC_COUNT];
    double watch_factor;   /* limits are multiplied by it in... */
    uint32_t scale_states; /* ...these states (bit per enum cp_state) */
    uint32_t refuse_states; /* states that refuse the mail: nothing is
                               charged (0: states are shadowed) */
    bool eom;
    bool two_phase;
    /* the state change detection made is d's (state_changed): the shared
     * store applies it only if its state there is still d->prev_state */
};

/* The shared store's answer. */
struct cp_remote {
    uint8_t own, cust;      /* states of d->id.dkey's and d->id.key's
                               records after the operation */
    uint8_t own_repeat;
    uint32_t own_since_s;
    bool change_refused;    /* detection's state change lost: another
                               host changed the state first */
    bool unknown;           /* (a state command) the shared store has no
                               record of the account */
    struct cp_meter_result res; /* as cp_meter_apply() (not meaningful
                                   when the state refused the mail) */
};

int cp_engine_decide_async(struct cp_engine *e, const struct cp_event *ev,
                           int64_t now_ms, struct cp_decision *d,
                           struct cp_await *aw);
/* True if the operation was applied to the local copy (r NULL; *res, if
 * given, says what it charged). */
bool cp_engine_resume(struct cp_engine *e, const struct cp_event *ev,
                      int64_t now_ms, struct cp_decision *d,
                      const struct cp_await *aw, const struct cp_remote *r,
                      struct cp_meter_result *res);

/* Fleet mode: forget the reservation of `instance` here only (its
 * END-OF-MESSAGE went to the shared store, which gave it back there). */
void cp_engine_drop_pending(struct cp_engine *e, struct str instance,
                            int64_t now_ms);

/*
 * Fleet mode: make the local copy of an account's state the shared one
 * (an admin command read it, or another host changed it).
 */
void cp_engine_mirror_state(struct cp_engine *e, const char *key, size_t len,
                            int state, uint32_t since_s, int repeat);

/*
 * One Postfix smtpd's policy connection (or the simulator's stand-in):
 * the transaction in progress, until its END-OF-MESSAGE. An smtpd serves
 * one session at a time, so a request naming another instance, or the
 * connection closing, means the transaction ended without END-OF-MESSAGE
 * (the client quit, sent RSET, or was refused): its reservation is given
 * back then (stats.pending_abandoned), not after
 * accounting.reservation_timeout.
 *
 * Only where END-OF-MESSAGE requests come at all: an smtpd without
 * smtpd_end_of_data_restrictions would start every transaction "without
 * one", and its reservations are then all its limits count. So a next
 * transaction abandons the last one only on a connection that has sent
 * END-OF-MESSAGE before, and a closing connection only once this engine
 * has seen one; otherwise accounting.reservation_timeout applies.
 */
#define CP_SESSION_INST_MAX 64 /* Postfix's: "2c8a.6571b2d0.e4f1a.0" */
struct cp_session {
    char inst[CP_SESSION_INST_MAX];
    size_t len;
    bool eom; /* this connection has sent END-OF-MESSAGE */
};
/* Before deciding `ev` on session s (ev NULL: the connection ended): a
 * transaction it has left without END-OF-MESSAGE is abandoned (above). */
void cp_session_step(struct cp_engine *e, struct cp_session *s,
                     const struct cp_event *ev, int64_t now_ms);

/* Release reservations older than the timeout; returns how many. */
size_t cp_engine_expire(struct cp_engine *e, int64_t now_ms);
size_t cp_engine_pending(const struct cp_engine *e);

/* Postfix action word: "DUNNO", "DEFER_IF_PERMIT", "REJECT", ... */
const char *cp_action_word(enum cp_action a);
const char *cp_stage_name(enum cp_stage s);

/*
 * A person's decision (chokepoint block / release / allow): set the
 * account's state to MANUAL_HOLD, PROBATION (release: clears the
 * evidence; from ALLOWED it goes to NORMAL instead) or ALLOWED, said in
 * d like an automatic change. Returns 0, or -1 if `to` is not
 * allowed from the current state (nothing to release, already there).
 */
int cp_engine_set_state(struct cp_engine *e, const struct cp_identity *id,
                        int to, int64_t now_ms, struct cp_decision *d);

/*
 * Delivery outcomes. At END-OF-MESSAGE the engine records the message's
 * queue id with its account (delivery.max_queue_ids entries at most, each
 * forgotten after delivery.queue_id_ttl or when the log says the message
 * left the queue); the mail-log follower reports what became of it.
 */
enum cp_outcome {
    CP_OUT_NONE,          /* nothing to learn (sent to a filter, ...) */
    CP_OUT_DELIVERED,     /* status=sent */
    CP_OUT_BAD_RECIPIENT, /* bounced, 5.1.x: no such user or domain */
    CP_OUT_REJECTED,      /* bounced, 5.7.x: refused by policy */
    CP_OUT_DEFERRED_POLICY, /* deferred, 4.7.x */
};
/* Classify a delivery record's status word and DSN ("sent", "2.0.0"). */
enum cp_outcome cp_outcome_of(const char *status, size_t slen,
                              const char *dsn, size_t dlen);
/*
 * What a queued message is, recorded with its queue id (`how`): mail an
 * account passes on for others rather than writes, whose recipient was
 * chosen by whoever wrote in. Its outcomes say what that mail was, not
 * what the account is: a reply's are no evidence, a forward's count a
 * quarter (cp_engine_outcome).
 */
#define CP_QUEUED_REPLY 1u  /* null sender, one recipient: a bounce or an
                               automatic reply (an out-of-office) */
#define CP_QUEUED_OTHERS 2u /* one recipient, another's address as sender
                               (not at the login's domain nor at the
                               customer's, nor one it uses as its own): a
                               forward, when the account's mail has gone
                               to that recipient before */
#define CP_QUEUED_FORWARD 4u /* and its RCPT found that it had (its text
                               is the forwarded mail's: no campaign) */
/*
 * One recipient's outcome for queue id `qid`: evidence for its account,
 * and maybe a state change (d says what). `rcpt`
 * (may be NULL) is the recipient: an accepted one is remembered with the
 * account, and a bounce to an address it had delivered to counts as
 * stale_recipient, not bad_recipient. A reply's outcomes are no evidence,
 * a forward's count a quarter (CP_QUEUED_*). Returns 1 if the queue id was
 * known, 0 if not.
 */
int cp_engine_outcome(struct cp_engine *e, const char *qid, size_t qlen,
                      const char *rcpt, size_t rlen, enum cp_outcome o,
                      int64_t now_ms, struct cp_decision *d);
/* The client address of account `key` is on an infected-host list (a
 * DNSBL answer): evidence, and maybe a state change (as above). */
void cp_engine_listed(struct cp_engine *e, const char *key, size_t keylen,
                      int64_t now_ms, struct cp_decision *d);
/* The message left the queue: forget its queue id. */
void cp_engine_dequeue(struct cp_engine *e, const char *qid, size_t qlen);
/* Call fn for each recorded queue id of an account; returns how many. */
size_t cp_engine_queued(const struct cp_engine *e, const char *key,
                        size_t keylen,
                        void (*fn)(void *arg, const char *qid, size_t qlen),
                        void *arg);
size_t cp_engine_queued_count(const struct cp_engine *e);

/*
 * Durability of the queue-id table (the daemon's checkpoints; the
 * simulator has none). With e->q_journal set, cp_engine_queued_journal()
 * calls `add` for each queue id recorded since the last stored one,
 * oldest first, and returns a mark; after the write succeeded,
 * cp_engine_queued_stored(mark) moves the journal past them (after a
 * failure the next report repeats them). Forgotten ids are not journalled:
 * the store keeps the newest delivery.max_queue_ids rows within
 * delivery.queue_id_ttl, so after a restart ids of mail that has left the
 * queue may come back (a hold names them, postsuper skips them).
 * cp_engine_queued_restore() puts back a stored id at start-up (oldest
 * first; ids past delivery.queue_id_ttl are skipped). Loop thread.
 */
typedef void (*cp_qid_add_fn)(void *arg, const char *qid, size_t qlen,
                              const char *key, size_t klen, int64_t t_ms,
                              unsigned how);
bool cp_engine_queued_dirty(const struct cp_engine *e);
uint64_t cp_engine_queued_journal(const struct cp_engine *e,
                                  cp_qid_add_fn add, void *arg);
void cp_engine_queued_stored(struct cp_engine *e, uint64_t mark);
void cp_engine_queued_restore(struct cp_engine *e, const char *qid,
                              size_t qlen, const char *key, size_t klen,
                              int64_t t_ms, unsigned how, int64_t now_ms);

/*
 * A message's content, from the milter after END-OF-MESSAGE: `fp` is its
 * fingerprint (NULL: the body was too short to have one). The account is
 * the one the policy service recorded for ev->queue_id, else derived
 * from ev (SASL login, client address) as for a policy request. The
 * fingerprint goes into the campaign table; sent by
 * content.campaign_accounts accounts or more, it is evidence (signal
 * campaign) and may move the account's state (d says so).
 * d->action: the account's state refuses mail now (THROTTLED: DEFER,
 * BLOCKED: REJECT or HOLD), or the fingerprint was sent by
 * content.refuse_accounts accounts or more (DEFER: this message only),
 * with d->text; else DUNNO. d->value: how many accounts sent it.
 * Returns 0, or -1 if no account could be found (d->action DUNNO).
 */
int cp_engine_content(struct cp_engine *e, const struct cp_event *ev,
                      const struct cp_fp *fp, int64_t now_ms,
                      struct cp_decision *d);

/* Build the meter rules of a ruleset (shared with the admin view). */
void cp_engine_rate(const struct cp_rule *r, double *rate);

#endif
