/*
 * outbox.c — everything chokepointd sends off the loop thread: the
 * notifications of an incident (customer mail and ARF report submitted
 * over SMTP with libcurl or through the MTA's sendmail command, the JSON
 * webhook through libcurl) and the retroactive
 * hold / release commands (postsuper). One worker thread runs the jobs in
 * order; a failed job is retried with doubling delays (notify.retry,
 * notify.attempts), then given up with an error in the log. Mail decisions
 * never wait for it: the loop thread only appends to the queue.
 *
 * Each job carries copies of everything it needs (command, URL, timeout),
 * so a reload never changes a job under the worker. Jobs are also rows of
 * the store's `outbox` table: added on the loop thread (inside the
 * transaction of the state change that caused them, see incident.c), updated
 * after a failed attempt and moved to the finished ones (outbox_done, which
 * `chokepoint show` lists) when done or given up by the worker,
 * on a connection of its own. A restart, or a crash, resumes the jobs not
 * yet done; one that had just succeeded when the process died is sent
 * again (at least once, never lost).
 *
 * Webhooks are signed when notify.webhook_secret(_file) is set, at each
 * attempt (so the timestamp is that of the POST, and a resumed job is
 * signed with the key in force):
 *   X-Chokepoint-Timestamp: UNIX-SECONDS
 *   X-Chokepoint-Signature: sha256=HEX(HMAC-SHA256(key, TIMESTAMP "." BODY))
 * The receiver recomputes it and refuses a stale timestamp (a replay).
 * The key is kept in memory only, never in the outbox table.
 *
 * Thread: outbox_start/stop, outbox_incident/command/stats/set_key on the
 * loop thread; the rest on the worker.
 */
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/lifecycle.h"
#include "core/notice.h"
#include "daemon.h"
#include "util/clock.h"
#include "util/msg.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define OUTBOX_MAX_JOBS 10000 /* queued jobs; more are refused (logged) */
#define OUTBOX_OUT_MAX 512    /* bytes of a command's output kept */

enum job_kind { JOB_MAIL, JOB_SMTP, JOB_WEBHOOK, JOB_COMMAND };

struct job {
    struct job *next;
    enum job_kind kind;
    char what[64];      /* "customer mail", "ARF report", "hold", ... */
    char account[CP_KEY_MAX * 4 + 4]; /* escaped, for the log */
    uint64_t incident;
    char *target;       /* command line, or URL */
    char *from, *to;    /* JOB_MAIL, JOB_SMTP */
    size_t sent;        /* JOB_SMTP: bytes of body handed to curl */
    struct strbuf body; /* message, JSON, or queue ids */
    uint64_t timeout_ms, retry_ms;
    unsigned attempts, max_attempts;
    uint64_t due_us;    /* monotonic */
    int64_t row;        /* its row in the outbox table, 0: none */
    bool unwritten;     /* its row could not be written, or was rolled
                           back: outbox_rewrite() tries again */
    uint64_t seq;       /* order of submission (outbox_tx_*) */
};

struct outbox {
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    struct job *head;
    size_t njobs;
    bool stop;
    struct outbox_stats st; /* under mu */
    char *key;              /* the webhook's HMAC key, or NULL (under mu) */
    size_t keylen;
    struct cp_sqlite *db;      /* the worker's connection; NULL: no store */
    struct cp_sqlite *loop_db; /* the loop thread's (borrowed) */
    /* loop thread: the hourly notification budget */
    int64_t hour;
    uint32_t this_hour;
    uint64_t seq, tx_seq; /* jobs submitted; at outbox_tx_begin() */
    size_t unwritten;     /* jobs whose row is to be written (under mu) */
    /* jobs (by seq) of the last rolled-back transactions, for a job the
     * worker held at the time (under mu) */
    uint64_t rb_lo[8], rb_hi[8];
    unsigned nrb;
};

/* Was j's row in a transaction that was rolled back? (under mu) */
static bool
rolled_back(const struct outbox *ob, const struct job *j)
{
    for (unsigned i = 0; i < ob->nrb && i < 8; i++)
        if (j->seq > ob->rb_lo[i] && j->seq <= ob->rb_hi[i])
            return true;
    return false;
}

static void
job_free(struct job *j)
{
    free(j->target);
    free(j->from);
    free(j->to);
    sb_fini(&j->body);
    free(j);
}

/* ---- worker ---- */

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/*
 * The signature headers of a webhook body (see the top of this file),
 * appended to *h; false if the HMAC could not be computed (no header is
 * added: the receiver refuses it, and the attempt is retried).
 */
static bool
sign_webhook(struct curl_slist **h, const char *key, size_t keylen,
             const struct strbuf *body)
{
    char hdr[64 + 2 * EVP_MAX_MD_SIZE], ts[32];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct strbuf msg;
    bool ok;
    int n;

    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    sb_init(&msg);
    sb_printf(&msg, "%s.", ts);
    sb_append(&msg, body->data, body->len);
    ok = HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg.data,
              msg.len, md, &mdlen) != NULL;
    sb_fini(&msg);
    if (!ok)
        return false;
    snprintf(hdr, sizeof(hdr), "X-Chokepoint-Timestamp: %s", ts);
    *h = curl_slist_append(*h, hdr);
    n = snprintf(hdr, sizeof(hdr), "X-Chokepoint-Signature: sha256=");
    for (unsigned i = 0; i < mdlen; i++)
        n += snprintf(hdr + n, sizeof(hdr) - (size_t)n, "%02x", md[i]);
    *h = curl_slist_append(*h, hdr);
    return true;
}

static int
post_webhook(struct outbox *ob, struct job *j, char *err, size_t errsz)
{
    char ebuf[CURL_ERROR_SIZE] = "", *key = NULL;
    struct curl_slist *h = NULL;
    CURL *c;
    size_t keylen = 0;
    long code = 0;
    CURLcode rc;

    uv_mutex_lock(&ob->mu); /* a reload may change the key meanwhile */
    if (ob->key != NULL) {
        key = xmemdup0(ob->key, ob->keylen);
        keylen = ob->keylen;
    }
    uv_mutex_unlock(&ob->mu);
    if (key != NULL && !sign_webhook(&h, key, keylen, &j->body)) {
        explicit_bzero(key, keylen);
        free(key);
        snprintf(err, errsz, "cannot compute the HMAC signature");
        return -1;
    }
    if (key != NULL)
        explicit_bzero(key, keylen);
    free(key);
    if ((c = curl_easy_init()) == NULL) {
        curl_slist_free_all(h);
        snprintf(err, errsz, "curl_easy_init failed");
        return -1;
    }
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "User-Agent: chokepoint/" CP_VERSION);
    curl_easy_setopt(c, CURLOPT_URL, j->target);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, j->body.data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)j->body.len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)j->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        snprintf(err, errsz, "%s", ebuf[0] ? ebuf : curl_easy_strerror(rc));
        return -1;
    }
    if (code < 200 || code > 299) {
        snprintf(err, errsz, "HTTP status %ld", code);
        return -1;
    }
    return 0;
}

static size_t
smtp_read(char *buf, size_t size, size_t n, void *arg)
{
    struct job *j = arg;
    size_t left = j->body.len - j->sent, k = size * n < left ? size * n : left;

    memcpy(buf, j->body.data + j->sent, k);
    j->sent += k;
    return k;
}

/* Submit over SMTP (libcurl: dot-stuffing, LF -> CRLF, the transaction). */
static int
send_smtp(struct job *j, char *err, size_t errsz)
{
    char ebuf[CURL_ERROR_SIZE] = "", from[NOTICE_MAX_ADDR + 3];
    struct curl_slist *rcpt = NULL;
    CURL *c = curl_easy_init();
    CURLcode rc;

    if (c == NULL) {
        snprintf(err, errsz, "curl_easy_init failed");
        return -1;
    }
    snprintf(from, sizeof(from), "<%s>", j->from);
    rcpt = curl_slist_append(rcpt, j->to);
    j->sent = 0;
    curl_easy_setopt(c, CURLOPT_URL, j->target);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, smtp_read);
    curl_easy_setopt(c, CURLOPT_READDATA, j);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_CRLF, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)j->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY); /* STARTTLS
                                                        if offered */
    rc = curl_easy_perform(c);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        snprintf(err, errsz, "%s", ebuf[0] ? ebuf : curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

static int
run_job(struct outbox *ob, struct job *j, char *err, size_t errsz)
{
    const char *mail_args[] = {"-f", j->from, "--", j->to, NULL};

    switch (j->kind) {
    case JOB_MAIL:
        return spawn_run(j->target, mail_args, j->body.data, j->body.len,
                         j->timeout_ms, err, errsz);
    case JOB_SMTP:
        return send_smtp(j, err, errsz);
    case JOB_COMMAND:
        return spawn_run(j->target, NULL, j->body.data, j->body.len,
                         j->timeout_ms, err, errsz);
    case JOB_WEBHOOK:
        return post_webhook(ob, j, err, errsz);
    }
    return -1;
}

/* The first job that is due, unlinked; or NULL with *wait_us set. */
static struct job *
take_due(struct outbox *ob, uint64_t now, uint64_t *wait_us)
{
    struct job **pp, *j;

    *wait_us = UINT64_MAX;
    for (pp = &ob->head; (j = *pp) != NULL; pp = &j->next) {
        if (j->due_us <= now) {
            *pp = j->next;
            ob->njobs--;
            return j;
        }
        if (j->due_us - now < *wait_us)
            *wait_us = j->due_us - now;
    }
    return NULL;
}

static void
append(struct outbox *ob, struct job *j)
{
    struct job **pp = &ob->head;

    while (*pp)
        pp = &(*pp)->next;
    j->next = NULL;
    *pp = j;
    ob->njobs++;
}

/* Doubling delays: retry, 2 retry, 4 retry, ... (attempts >= 1). */
static uint64_t
retry_delay_ms(const struct job *j)
{
    unsigned k = j->attempts - 1 < 20 ? j->attempts - 1 : 20;

    return j->retry_ms << k;
}

/* After an attempt: move the job's row to the finished ones (`outcome`:
 * sent, or given up and why) or note when it is due again (`outcome`
 * NULL). Worker thread, its own connection. A failed write is logged: the
 * job goes on in memory (and may run twice after a restart). */
static void
persist_attempt(struct outbox *ob, struct job *j, const char *outcome)
{
    char err[CP_ERR_MAX];
    int rc;

    if (ob->db == NULL || j->row <= 0)
        return;
    rc = outcome ? cp_sqlite_outbox_done(ob->db, j->row, outcome,
                                         j->attempts, j->kind == JOB_COMMAND,
                                         clock_wall_ms(), err)
                 : cp_sqlite_outbox_retry(ob->db, j->row, j->attempts,
                                          clock_wall_ms() +
                                              (int64_t)retry_delay_ms(j),
                                          err);
    if (rc < 0)
        msg_error("account %s: %s: outbox not updated: %s", j->account,
                  j->what, err);
}

static void
worker(void *arg)
{
    struct outbox *ob = arg;

    uv_mutex_lock(&ob->mu);
    while (!ob->stop) {
        uint64_t wait_us;
        struct job *j = take_due(ob, clock_mono_us(), &wait_us);
        char err[OUTBOX_OUT_MAX];
        int rc;

        if (j == NULL) {
            if (wait_us == UINT64_MAX)
                uv_cond_wait(&ob->cv, &ob->mu);
            else
                uv_cond_timedwait(&ob->cv, &ob->mu, wait_us * 1000);
            continue;
        }
        uv_mutex_unlock(&ob->mu);
        rc = run_job(ob, j, err, sizeof(err));
        j->attempts++;
        if (rc == 0)
            msg_info("account %s: %s%s%s sent (incident %llu, attempt %u)",
                     j->account, j->what, j->to ? " to " : "",
                     j->to ? j->to : "", (unsigned long long)j->incident,
                     j->attempts);
        else if (j->attempts < j->max_attempts)
            msg_warn("account %s: %s failed (attempt %u of %u, retrying in "
                     "%.1f s): %s",
                     j->account, j->what, j->attempts, j->max_attempts,
                     (double)retry_delay_ms(j) / 1000, err);
        else
            msg_error("account %s: %s failed %u times, given up: %s",
                      j->account, j->what, j->attempts, err);
        if (rc == 0) {
            persist_attempt(ob, j, "sent");
        } else if (j->attempts >= j->max_attempts) {
            char outcome[OUTBOX_OUT_MAX + 32];

            snprintf(outcome, sizeof(outcome), "given up: %s", err);
            persist_attempt(ob, j, outcome);
        } else {
            persist_attempt(ob, j, NULL);
        }
        uv_mutex_lock(&ob->mu);
        if (rc == 0) {
            ob->st.sent++;
            job_free(j);
        } else if (j->attempts < j->max_attempts) {
            ob->st.retried++;
            j->due_us = clock_mono_us() + retry_delay_ms(j) * 1000;
            if (!j->unwritten && rolled_back(ob, j)) {
                j->row = 0; /* its row went with the transaction */
                j->unwritten = true;
                ob->unwritten++;
            }
            append(ob, j);
        } else {
            ob->st.failed++;
            job_free(j);
        }
    }
    uv_mutex_unlock(&ob->mu);
}

/* ---- loop thread ---- */

static char *
dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* A job of the outbox table, as it was when the last process stopped. A
 * row that cannot be a job (edited by hand: unknown kind, a mail without
 * its addresses) is logged and deleted, never run as something else. */
static void
resume_row(void *arg, const struct cp_outbox_row *r)
{
    struct outbox *ob = arg;
    struct job *j;
    int64_t wait = r->due_ms - clock_wall_ms();
    char err[CP_ERR_MAX];

    if (r->kind < JOB_MAIL || r->kind > JOB_COMMAND ||
        ((r->kind == JOB_MAIL || r->kind == JOB_SMTP) &&
         (r->from == NULL || r->to == NULL))) {
        msg_error("outbox: row %lld is not a job this version can run; "
                  "deleted",
                  (long long)r->id);
        if (cp_sqlite_outbox_done(ob->db, r->id,
                                  "dropped: not a job this version can run",
                                  r->attempts, false, clock_wall_ms(),
                                  err) < 0)
            msg_error("outbox: %s", err);
        return;
    }
    j = xcalloc(1, sizeof(*j));
    j->kind = (enum job_kind)r->kind;
    snprintf(j->what, sizeof(j->what), "%s", r->what);
    snprintf(j->account, sizeof(j->account), "%s", r->account);
    j->incident = r->incident;
    j->target = xstrdup(r->target);
    j->from = dup_or_null(r->from);
    j->to = dup_or_null(r->to);
    sb_init(&j->body);
    if (r->body_len > 0)
        sb_append(&j->body, r->body, r->body_len);
    j->timeout_ms = r->timeout_ms;
    j->retry_ms = r->retry_ms;
    j->attempts = r->attempts;
    j->max_attempts = r->max_attempts > r->attempts ? r->max_attempts
                                                    : r->attempts + 1;
    j->due_us = clock_mono_us() + (wait > 0 ? (uint64_t)wait * 1000 : 0);
    j->row = r->id;
    append(ob, j);
}

struct outbox *
outbox_start(const struct cp_config *cfg, const char *store_path,
             struct cp_sqlite *loop_db)
{
    struct outbox *ob = xcalloc(1, sizeof(*ob));
    char err[CP_ERR_MAX];
    long n;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_mutex_init(&ob->mu);
    uv_cond_init(&ob->cv);
    ob->loop_db = loop_db;
    if (store_path != NULL &&
        (ob->db = cp_sqlite_open(store_path, err)) == NULL)
        msg_fatal("outbox: %s", err);
    if (ob->db != NULL) {
        n = cp_sqlite_outbox_load(ob->db, resume_row, ob, err);
        if (n < 0)
            msg_fatal("outbox: %s", err);
        if (n > 0)
            msg_info("outbox: resuming %ld notification and hold jobs left "
                     "by the last run",
                     n);
    }
    /* before the worker runs: a resumed webhook is signed too */
    outbox_set_key(ob, cfg);
    if (uv_thread_create(&ob->thread, worker, ob) != 0)
        msg_fatal("outbox: cannot start its thread");
    return ob;
}

void
outbox_stop(struct outbox *ob)
{
    struct job *j, *next;

    if (ob == NULL)
        return;
    uv_mutex_lock(&ob->mu);
    ob->stop = true;
    uv_cond_signal(&ob->cv);
    uv_mutex_unlock(&ob->mu);
    uv_thread_join(&ob->thread); /* waits for a running job's timeout */
    for (j = ob->head; j != NULL; j = next) {
        next = j->next;
        if (j->row > 0)
            msg_info("account %s: %s not sent yet (%u attempts): kept for "
                     "the next start",
                     j->account, j->what, j->attempts);
        else
            msg_warn("account %s: %s not sent (shutting down after %u "
                     "attempts)",
                     j->account, j->what, j->attempts);
        job_free(j);
    }
    cp_sqlite_close(ob->db);
    outbox_set_key(ob, NULL);
    uv_cond_destroy(&ob->cv);
    uv_mutex_destroy(&ob->mu);
    curl_global_cleanup();
    free(ob);
}

void
outbox_set_key(struct outbox *ob, const struct cp_config *cfg)
{
    char *key;

    if (ob == NULL)
        return;
    key = cfg && cfg->webhook_key
              ? xmemdup0(cfg->webhook_key, cfg->webhook_key_len)
              : NULL;
    uv_mutex_lock(&ob->mu);
    if (ob->key != NULL)
        explicit_bzero(ob->key, ob->keylen);
    free(ob->key);
    ob->key = key;
    ob->keylen = key ? cfg->webhook_key_len : 0;
    uv_mutex_unlock(&ob->mu);
}

void
outbox_stats(struct outbox *ob, struct outbox_stats *out)
{
    uv_mutex_lock(&ob->mu);
    *out = ob->st;
    out->queued = ob->njobs;
    uv_mutex_unlock(&ob->mu);
}

static struct job *
job_new(const struct cp_config *cfg, enum job_kind kind, const char *what,
        const char *account, uint64_t incident)
{
    struct job *j = xcalloc(1, sizeof(*j));

    j->kind = kind;
    snprintf(j->what, sizeof(j->what), "%s", what);
    snprintf(j->account, sizeof(j->account), "%s", account);
    j->incident = incident;
    sb_init(&j->body);
    j->timeout_ms = cfg->notify.timeout_ms;
    j->retry_ms = cfg->notify.retry_ms;
    j->max_attempts = cfg->notify.attempts;
    j->due_us = clock_mono_us();
    return j;
}

/* Write the job to the outbox table (loop thread, its connection). */
static void
persist_new(struct outbox *ob, struct job *j)
{
    struct cp_outbox_row r;
    char err[CP_ERR_MAX];

    if (ob->loop_db == NULL)
        return;
    memset(&r, 0, sizeof(r));
    r.kind = j->kind;
    r.what = j->what;
    r.account = j->account;
    r.incident = j->incident;
    r.target = j->target;
    r.from = j->from;
    r.to = j->to;
    r.body = j->body.data;
    r.body_len = j->body.len;
    r.timeout_ms = j->timeout_ms;
    r.retry_ms = j->retry_ms;
    r.max_attempts = j->max_attempts;
    r.due_ms = clock_wall_ms();
    j->row = cp_sqlite_outbox_add(ob->loop_db, &r, err);
    if (j->row < 0) {
        j->row = 0;
        if (!j->unwritten)
            msg_error("account %s: %s not written to the outbox table (it "
                      "is sent, and the write tried again every "
                      "checkpoint): %s",
                      j->account, j->what, err);
        j->unwritten = true;
    } else {
        j->unwritten = false;
    }
}

static void
submit(struct outbox *ob, struct job *j)
{
    bool full;

    uv_mutex_lock(&ob->mu);
    full = ob->njobs >= OUTBOX_MAX_JOBS;
    ob->st.dropped += full;
    uv_mutex_unlock(&ob->mu);
    if (full) {
        msg_error("account %s: %s dropped: %d jobs already waiting",
                  j->account, j->what, OUTBOX_MAX_JOBS);
        job_free(j);
        return;
    }
    j->seq = ++ob->seq;
    persist_new(ob, j); /* outside the lock: the worker must not wait */
    uv_mutex_lock(&ob->mu);
    ob->unwritten += j->unwritten;
    append(ob, j);
    uv_cond_signal(&ob->cv);
    uv_mutex_unlock(&ob->mu);
}

static void
mail_job(struct outbox *ob, const struct cp_config *cfg, const char *what,
         const char *account, uint64_t incident, const char *to,
         struct strbuf *msg)
{
    bool smtp = cfg->notify.smtp[0] != '\0';
    struct job *j = job_new(cfg, smtp ? JOB_SMTP : JOB_MAIL, what, account,
                            incident);

    j->target = xstrdup(smtp ? cfg->notify.smtp : cfg->notify.sendmail);
    j->from = xstrdup(cfg->notify.from);
    j->to = xstrdup(to);
    sb_append(&j->body, msg->data, msg->len);
    submit(ob, j);
}

/* The number an incident's jobs are filed under: that of the state change
 * (`chokepoint incident N` lists change N's notices), for a release not
 * the block's it quotes. */
static uint64_t
change_of(const struct cp_incident *in)
{
    return in->change != 0 ? in->change : in->id;
}

/* The customer's mail of an incident: the block or the release notice. */
static void
customer_mail(struct outbox *ob, const struct cp_config *cfg,
              const struct cp_incident *in, struct strbuf *sb)
{
    const char *what = in->released ? "release notice" : "customer mail";
    const char *tmpl = in->released ? cfg->release_template
                                    : cfg->notify_template;
    char err[CP_ERR_MAX];

    if (in->contact == NULL) {
        msg_info("account %s: no contact= in the customer map; customer "
                 "not notified",
                 in->account);
        return;
    }
    if (cp_notice_customer(in, cfg->notify.from, tmpl, sb, err) == 0)
        mail_job(ob, cfg, what, in->account, change_of(in), in->contact,
                 sb);
    else
        msg_error("account %s: %s not sent: %s", in->account, what, err);
}

void
outbox_incident(struct outbox *ob, const struct cp_config *cfg,
                const struct cp_incident *in, bool customer, int64_t now_ms)
{
    const struct cp_notify *n = &cfg->notify;
    bool arf = n->abuse_to[0] != '\0' && !in->released;
    char err[CP_ERR_MAX];
    struct strbuf sb;

    customer = customer && n->customer;
    if (n->from[0] == '\0' || (!customer && !arf && n->webhook[0] == '\0'))
        return; /* nothing of this is configured */
    if (now_ms / 3600000 != ob->hour) {
        ob->hour = now_ms / 3600000;
        ob->this_hour = 0;
    }
    if (ob->this_hour >= n->max_per_hour) {
        uv_mutex_lock(&ob->mu);
        ob->st.suppressed++;
        uv_mutex_unlock(&ob->mu);
        msg_warn("account %s: incident %llu not notified: "
                 "notify.max_per_hour (%u) reached",
                 in->account, (unsigned long long)change_of(in),
                 n->max_per_hour);
        return;
    }
    ob->this_hour++;
    sb_init(&sb);
    if (customer)
        customer_mail(ob, cfg, in, &sb);
    sb_reset(&sb);
    if (arf) {
        if (cp_notice_arf(in, n->from, n->abuse_to, &sb, err) == 0)
            mail_job(ob, cfg, "ARF report", in->account, change_of(in),
                     n->abuse_to, &sb);
        else
            msg_error("account %s: ARF report not sent: %s", in->account,
                      err);
    }
    if (n->webhook[0] != '\0') {
        struct job *j = job_new(cfg, JOB_WEBHOOK, "webhook", in->account,
                                change_of(in));

        j->target = xstrdup(n->webhook);
        cp_notice_webhook(in, &j->body);
        submit(ob, j);
    }
    sb_fini(&sb);
}

void
outbox_command(struct outbox *ob, const struct cp_config *cfg,
               const char *what, const char *command, const char *account,
               uint64_t incident, const char *input, size_t len)
{
    struct job *j = job_new(cfg, JOB_COMMAND, what, account, incident);

    j->target = xstrdup(command);
    sb_append(&j->body, input, len);
    submit(ob, j);
}

void
outbox_tx_begin(struct outbox *ob)
{
    if (ob != NULL)
        ob->tx_seq = ob->seq;
}

/* The transaction the rows since outbox_tx_begin() were written in was
 * rolled back: those jobs are to be written again — the waiting ones now,
 * one the worker holds when it comes back for a retry (the last 8 such
 * transactions are remembered). */
void
outbox_tx_rolled_back(struct outbox *ob)
{
    if (ob == NULL)
        return;
    uv_mutex_lock(&ob->mu);
    ob->rb_lo[ob->nrb % 8] = ob->tx_seq;
    ob->rb_hi[ob->nrb % 8] = ob->seq;
    ob->nrb++;
    for (struct job *j = ob->head; j != NULL; j = j->next)
        if (j->seq > ob->tx_seq && !j->unwritten) {
            j->row = 0;
            j->unwritten = true;
            ob->unwritten++;
        }
    uv_mutex_unlock(&ob->mu);
}

/* Write the rows of waiting jobs that have none (loop thread, at every
 * checkpoint tick). Under the lock: the worker must not take a job while
 * its row is being written; this only runs after a failure. */
void
outbox_rewrite(struct outbox *ob)
{
    size_t left = 0, done = 0;

    if (ob == NULL || ob->loop_db == NULL)
        return;
    uv_mutex_lock(&ob->mu); /* (a scan of the waiting jobs: few) */
    for (struct job *j = ob->head; j != NULL; j = j->next) {
        if (!j->unwritten)
            continue;
        persist_new(ob, j);
        if (j->unwritten)
            left++;
        else
            done++;
    }
    ob->unwritten = left;
    uv_mutex_unlock(&ob->mu);
    if (done > 0)
        msg_warn("outbox: %zu jobs written to the outbox table after all "
                 "(%zu still waiting for the store)",
                 done, left);
}

size_t
outbox_unwritten(struct outbox *ob)
{
    size_t n;

    if (ob == NULL)
        return 0;
    uv_mutex_lock(&ob->mu);
    n = ob->unwritten;
    uv_mutex_unlock(&ob->mu);
    return n;
}
