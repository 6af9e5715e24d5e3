/*
 * main.c — chokepointd: start-up, signals, reload, shutdown. (What a
 * decision leads to, state changes and incidents, is incident.c's.)
 *
 *   chokepointd [-c FILE] [--check] [--version] [--sim-clock]
 *
 * Start-up errors (bad config, unusable store or socket) are fatal with a
 * message naming what and where. SIGHUP reloads the configuration and the
 * customer map: the new configuration is built completely and swapped in
 * whole, or refused with the old one kept. SIGTERM/SIGINT stop accepting,
 * close connections, write a final checkpoint and exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/evidence.h"
#include "core/explain.h"
#include "core/lifecycle.h"
#include "core/notice.h"
#include "daemon/daemon.h"
#include "daemon/fleet.h"
#include "util/clock.h"
#include "util/msg.h"
#include "util/strbuf.h"

#define DEFAULT_CONFIG "/etc/chokepoint/chokepoint.yaml"
#define EXPIRE_TICK_MS 1000

/*
 * A blocked zombie keeps trying, often thousands of times an hour: its
 * refusals (decided by the account's state, no state change) are logged
 * through a token bucket of REFUSAL_LOG_RATE lines a second (burst
 * REFUSAL_LOG_BURST) shared by all accounts; the rest are counted
 * (status: refusals_unlogged) and summed up in one line a minute.
 */
#define REFUSAL_LOG_RATE 10.0
#define REFUSAL_LOG_BURST 50.0
/* Every warning a caller can cause (malformed input, refused connections,
 * timeouts) goes through its own bucket: a peer cannot fill the log. */
#define PEER_LOG_RATE 10.0
#define PEER_LOG_BURST 100.0

int64_t
daemon_now_ms(void)
{
    return clock_wall_ms();
}

static void
on_sweep(uv_timer_t *t)
{
    struct daemon *d = t->data;
    size_t n = memstore_sweep(d->ms, &d->cfg->det, daemon_now_ms(),
                              2 * 86400000LL);

    if (n > 0)
        msg_debug("freed the evidence of %zu idle accounts", n);
}

static bool
same_slots(const struct cp_config *a, const struct cp_config *b)
{
    if (a->nslots != b->nslots)
        return false;
    for (size_t i = 0; i < a->nslots; i++)
        if (strcmp(a->slots[i].name, b->slots[i].name) != 0)
            return false;
    return true;
}

/* notify.reporting_mta, or this host's name. */
static void
set_hostname(struct daemon *d)
{
    if (d->cfg->notify.reporting_mta[0] != '\0')
        snprintf(d->hostname, sizeof(d->hostname), "%s",
                 d->cfg->notify.reporting_mta);
    else if (gethostname(d->hostname, sizeof(d->hostname) - 1) < 0)
        snprintf(d->hostname, sizeof(d->hostname), "localhost");
}

static void
warn_restart_needed(const struct cp_config *old, const struct cp_config *new)
{
    bool listen_same = old->nlisten == new->nlisten;

    for (size_t i = 0; listen_same && i < old->nlisten; i++)
        listen_same = strcmp(old->listen[i].spec, new->listen[i].spec) == 0;
    if (!listen_same)
        msg_warn("reload: daemon.listen changed; restart to apply it");
    if (strcmp(old->content.milter, new->content.milter) != 0)
        msg_warn("reload: content.milter changed; restart to apply it");
    if (old->content.max_fingerprints != new->content.max_fingerprints)
        msg_warn("reload: content.max_fingerprints changed; restart to "
                 "apply it");
    if (strcmp(old->store_path, new->store_path) != 0)
        msg_warn("reload: store.path changed; restart to apply it");
    if (strcmp(old->admin_socket, new->admin_socket) != 0)
        msg_warn("reload: daemon.admin_socket changed; restart to apply it");
    if (old->admin_read_group.set != new->admin_read_group.set ||
        old->admin_read_group.gid != new->admin_read_group.gid)
        msg_warn("reload: daemon.admin_read_group changed; restart to apply "
                 "it");
}

int
daemon_reload(struct daemon *d, char *err)
{
    struct cp_config *ncfg, *old;
    bool kept;

    sd_state("RELOADING=1");
    if ((ncfg = cp_config_load(d->cfg->file, err)) == NULL) {
        msg_error("reload refused, keeping the running configuration: %s",
                  err);
        incident_open_log(d); /* logrotate's SIGHUP all the same */
        sd_state("READY=1\nSTATUS=answering; the last reload was refused: "
                 "%.200s", err);
        return -1;
    }
    old = d->cfg;
    warn_restart_needed(old, ncfg);
    if (!same_slots(old, ncfg))
        memstore_remap(d->ms, old->slots, old->nslots, ncfg->slots,
                       ncfg->nslots);
    d->cfg = ncfg;
    outbox_set_key(d->outbox, ncfg);
    cp_engine_set_config(&d->engine, ncfg);
    msg_init("chokepointd", ncfg->log_syslog, ncfg->log_level);
    incident_open_log(d);
    if (strcmp(old->dnsbl.zones_text, ncfg->dnsbl.zones_text) != 0 ||
        strcmp(old->dnsbl.ignore_text, ncfg->dnsbl.ignore_text) != 0 ||
        strcmp(old->dnsbl.servers, ncfg->dnsbl.servers) != 0 ||
        old->dnsbl.timeout_ms != ncfg->dnsbl.timeout_ms)
        dnsbl_reload(d->dnsbl);
    set_hostname(d);
    if (old->delivery.poll_ms != ncfg->delivery.poll_ms)
        logfollow_set_interval(d->logfollow, ncfg->delivery.poll_ms);
    if (old->checkpoint_ms != ncfg->checkpoint_ms)
        uv_timer_start(&d->ckpt_timer, d->ckpt_timer.timer_cb,
                       ncfg->checkpoint_ms, ncfg->checkpoint_ms);
    /* decisions waiting for Redis keep the old one until they are made
     * (retired first: a changed server answers them at once) */
    kept = d->fleet != NULL && fleet_retire(d->fleet, old);
    if (d->fleet != NULL)
        fleet_reload(d->fleet);
    if (!kept)
        cp_config_free(old);
    msg_info("reload: configuration %s loaded (%zu classes, %zu customers%s)",
             ncfg->file, ncfg->nclasses, ncfg->ncustomers,
             ncfg->shadow ? ", shadow mode" : "");
    sd_state("READY=1\nSTATUS=answering; configuration reloaded");
    return 0;
}

static void
on_expire_tick(uv_timer_t *t)
{
    struct daemon *d = t->data;
    size_t n = cp_engine_expire(&d->engine, daemon_now_ms());

    if (n > 0)
        msg_debug("released %zu reservations of messages that did not reach "
                  "END-OF-MESSAGE",
                  n);
}

static void
shutdown_daemon(struct daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    msg_info("shutting down");
    sd_state("STOPPING=1");
    server_close(d);
    admin_close(d);
    conn_close_all(d);
    uv_timer_stop(&d->expire_timer);
    uv_close((uv_handle_t *)&d->expire_timer, NULL);
    uv_timer_stop(&d->sweep_timer);
    uv_close((uv_handle_t *)&d->sweep_timer, NULL);
    ckpt_stop(d);
    logfollow_stop(d->logfollow);
    d->logfollow = NULL;
    dnsbl_stop(d->dnsbl);
    d->dnsbl = NULL;
    fleet_stop(d->fleet);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->sig_usr1, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;

    if (signum == SIGHUP) {
        char err[CP_ERR_MAX];

        daemon_reload(d, err);
    } else if (signum == SIGUSR1) { /* logrotate: reopen, reload nothing */
        incident_open_log(d);
        msg_info("log files reopened");
    } else {
        shutdown_daemon(d);
    }
}

static void
usage(FILE *fp)
{
    fprintf(fp, "usage: chokepointd [-c FILE] [--check] [--version]\n"
                "  -c, --config FILE  configuration (default %s)\n"
                "  --check            validate the configuration and the "
                "customer map, then exit\n"
                "  --version          print the version and exit\n"
                "  --new-store        start with an empty store although "
                "one was kept before\n"
                "  --sim-clock        take the time from each request's "
                "chokepoint_sim_time\n"
                "                     attribute (chokepoint sim --live; "
                "never in production)\n",
            DEFAULT_CONFIG);
}

static void
signals_start(struct daemon *d)
{
    uv_signal_t *s[] = {&d->sig_hup, &d->sig_usr1, &d->sig_term,
                        &d->sig_int};
    int nums[] = {SIGHUP, SIGUSR1, SIGTERM, SIGINT};

    for (size_t i = 0; i < 4; i++) {
        uv_signal_init(d->loop, s[i]);
        s[i]->data = d;
        uv_signal_start(s[i], on_signal, nums[i]);
    }
    signal(SIGPIPE, SIG_IGN);
}

/* A database written before evidence and states were kept per login:
 * brought up to date once (store/sqlite.h), and said so. */
static void
migrate(struct daemon *d)
{
    struct cp_sqlite_migration m;
    char err[CP_ERR_MAX];
    long rc = cp_sqlite_migrate(d->db, daemon_now_ms(), &m, err);

    if (rc < 0)
        msg_fatal("store %s: upgrade failed: %s", d->cfg->store_path, err);
    if (m.columns_added > 0)
        msg_info("store %s: upgraded: the queue ids keep what each message "
                 "was (a reply, a forward)", d->cfg->store_path);
    if (rc > 0)
        msg_warn("store %s: upgraded from format %d: evidence and states "
                 "are kept per login now; %ld customers' automatic states "
                 "reset to NORMAL and %ld customers' evidence records "
                 "dropped (their logins learn again; BLOCKED, MANUAL_HOLD "
                 "and ALLOWED stay on the customer)",
                 d->cfg->store_path, m.from ? m.from : 1, m.states_reset,
                 m.evidence_dropped);
}

static void
restore_state(struct daemon *d)
{
    char err[CP_ERR_MAX];
    uint64_t t0;
    long n, nev, dropped, skipped = 0, sskipped = 0;

    d->db = cp_sqlite_open(d->cfg->store_path, err);
    if (d->db == NULL)
        msg_fatal("store: %s", err);
    migrate(d);
    t0 = clock_mono_us();
    n = cp_sqlite_load(d->db, d->cfg->slots, d->cfg->nslots, d->ms, &skipped,
                       err);
    if (n < 0 || cp_sqlite_load_states(d->db, d->ms, &sskipped, err) < 0 ||
        (nev = cp_sqlite_load_evidence(d->db, d->ms, &dropped, err)) < 0)
        msg_fatal("store %s: %s", d->cfg->store_path, err);
    if (nev > 0)
        msg_info("restored the evidence of %ld accounts (%.0f ms since the "
                 "start of the restore)",
                 nev, (double)(clock_mono_us() - t0) / 1e3);
    if (skipped > 0)
        msg_warn("store %s: %ld damaged counter records skipped (those "
                 "accounts' limits start empty)",
                 d->cfg->store_path, skipped);
    if (sskipped > 0)
        msg_warn("store %s: %ld damaged state records skipped",
                 d->cfg->store_path, sskipped);
    if (dropped > 0)
        msg_warn("store %s: %ld evidence records not read back (another "
                 "format, damaged, or of no account): those accounts start "
                 "with clean evidence",
                 d->cfg->store_path, dropped);

    d->db_sync = cp_sqlite_open(d->cfg->store_path, err);
    if (d->db_sync == NULL)
        msg_fatal("store: %s", err);
    msg_info("restored %ld accounts from %s in %.0f ms", n,
             d->cfg->store_path,
             (double)(clock_mono_us() - t0) / 1e3);
}

static void
restore_qid(void *arg, const char *qid, size_t qlen, const char *key,
            size_t klen, int64_t t_ms, unsigned how)
{
    struct daemon *d = arg;

    cp_engine_queued_restore(&d->engine, qid, qlen, key, klen, t_ms, how,
                             daemon_now_ms());
}

/* The queue ids of mail accepted before the restart (and still within
 * delivery.queue_id_ttl): their outcomes are attributed, a block holds
 * them. */
static void
restore_queued(struct daemon *d)
{
    char err[CP_ERR_MAX];
    uint64_t t0 = clock_mono_us();
    long n;

    /* the engine's table of recipients delivered to (after
     * cp_engine_init, which starts the engine empty) */
    n = cp_sqlite_load_delivered(d->db, &d->engine.delivered,
                                 d->cfg->delivery.max_recipients, err);
    if (n < 0)
        msg_fatal("store %s: %s", d->cfg->store_path, err);
    if (n > 0)
        msg_info("restored %ld recipients delivered to", n);
    d->engine.q_journal = true;
    if (d->cfg->delivery.max_queue_ids == 0)
        return;
    n = cp_sqlite_load_queued(d->db, d->cfg->delivery.max_queue_ids,
                              ckpt_queued_since(d), restore_qid, d, err);
    if (n < 0)
        msg_fatal("store %s: %s", d->cfg->store_path, err);
    if (n > 0)
        msg_info("restored %zu queue ids of queued mail in %.0f ms",
                 cp_engine_queued_count(&d->engine),
                 (double)(clock_mono_us() - t0) / 1e3);
}

/* Everything before the loop runs (daemon.h); exits on an error. */
void
daemon_open(struct daemon *d, const char *file, bool sim_clock,
            bool new_store)
{
    char err[CP_ERR_MAX];

    memset(d, 0, sizeof(*d));
    umask(027);
    d->cfg = cp_config_load(file, err);
    if (d->cfg == NULL)
        msg_fatal("%s", err);
    msg_init("chokepointd", d->cfg->log_syslog, d->cfg->log_level);
    /* privs.c: limits, lock, directories, sockets as root, then the drop */
    if (privs_resolve(d->cfg, err, sizeof(err)) < 0)
        msg_fatal("%s", err);
    privs_fd_limit(d->cfg);
    privs_prepare(d->cfg);
    d->lock_fd = privs_lock(d->cfg, new_store);
    d->loop = uv_default_loop();
    d->diag = sockdiag_open();
    hmap_init(&d->shares, 64);
    ratelog_init(&d->refusal_log, "refusals of blocked or throttled accounts",
                 REFUSAL_LOG_RATE, REFUSAL_LOG_BURST);
    ratelog_init(&d->peer_log, "warnings about callers", PEER_LOG_RATE,
                 PEER_LOG_BURST);
    if (server_listen(d) < 0 || admin_listen(d) < 0)
        msg_fatal("cannot open the sockets; exiting");
    privs_drop(d->cfg);
    d->started_ms = daemon_now_ms();
    d->ms = memstore_new(1024);
    d->recent = recent_new(RECENT_MAX);
    d->seen = seen_new();
    restore_state(d);
    cp_engine_init(&d->engine, d->cfg, &d->ms->base);
    restore_queued(d);
    incident_open_log(d);
    signals_start(d);
    uv_timer_init(d->loop, &d->expire_timer);
    d->expire_timer.data = d;
    d->sim_clock = sim_clock;
    if (sim_clock)
        msg_warn("--sim-clock: the clock comes from the clients' "
                 "chokepoint_sim_time attribute; for simulation only");
    else
        uv_timer_start(&d->expire_timer, on_expire_tick, EXPIRE_TICK_MS,
                       EXPIRE_TICK_MS);
    ckpt_start(d);
    d->logfollow = logfollow_start(d);
    d->outbox = outbox_start(d->cfg, d->cfg->store_path, d->db_sync);
    d->dnsbl = dnsbl_start(d);
    if (d->cfg->store_redis)
        d->fleet = fleet_start(d);
    if (d->cfg->notify.reporting_mta[0] != '\0')
        snprintf(d->hostname, sizeof(d->hostname), "%s",
                 d->cfg->notify.reporting_mta);
    else if (gethostname(d->hostname, sizeof(d->hostname) - 1) < 0)
        snprintf(d->hostname, sizeof(d->hostname), "localhost");
    uv_timer_init(d->loop, &d->sweep_timer);
    d->sweep_timer.data = d;
    uv_timer_start(&d->sweep_timer, on_sweep, 3600000, 3600000);
    msg_info("chokepointd %s started: %zu classes, %zu customers, "
             "%zu accounts%s",
             CP_VERSION, d->cfg->nclasses, d->cfg->ncustomers,
             d->ms->base.ops->count(&d->ms->base),
             d->cfg->shadow ? ", SHADOW MODE (answers DUNNO)" : "");
    sd_state("READY=1\nSTATUS=answering; %zu accounts%s",
             d->ms->base.ops->count(&d->ms->base),
             d->cfg->shadow ? ", shadow mode" : "");
}

/* After the loop has stopped: the final checkpoint, and everything freed. */
void
daemon_close(struct daemon *d)
{
    outbox_stop(d->outbox);
    ckpt_final(d);
    cp_engine_fini(&d->engine);
    fleet_free(d->fleet);
    cp_sqlite_close(d->db);
    cp_sqlite_close(d->db_sync);
    memstore_free(d->ms);
    recent_free(d->recent);
    seen_free(d->seen);
    if (d->decision_log)
        fclose(d->decision_log);
    free(d->listeners);
    sockdiag_close(d->diag);
    HMAP_FOREACH(&d->shares, i)
        free(d->shares.ents[i].val);
    hmap_fini(&d->shares);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    cp_config_free(d->cfg);
    uv_loop_close(d->loop);
    msg_info("stopped");
}

void
daemon_stop(struct daemon *d)
{
    shutdown_daemon(d);
}

static int
run(const char *file, bool sim_clock, bool new_store)
{
    struct daemon d;

    daemon_open(&d, file, sim_clock, new_store);
    uv_run(d.loop, UV_RUN_DEFAULT);
    daemon_close(&d);
    return 0;
}

#ifndef CP_NO_MAIN /* the fuzz targets of tests/fuzz/fuzz_daemon.c */
int
main(int argc, char **argv)
{
    const char *file = DEFAULT_CONFIG;
    bool check = false, sim_clock = false, new_store = false;

    msg_init("chokepointd", false, MSG_INFO);
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
            i + 1 >= argc) {
            fprintf(stderr, "chokepointd: option '%s' needs a FILE\n"
                            "(chokepointd --help: the options)\n",
                    argv[i]);
            return 2;
        } else if (strcmp(argv[i], "-c") == 0 ||
                   strcmp(argv[i], "--config") == 0) {
            file = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--sim-clock") == 0) {
            sim_clock = true;
        } else if (strcmp(argv[i], "--new-store") == 0) {
            new_store = true;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("chokepointd %s\n", CP_VERSION);
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "chokepointd: %s '%s'\n"
                            "(chokepointd --help: the options)\n",
                    argv[i][0] == '-' ? "unknown option" : "unexpected argument",
                    argv[i]);
            return 2;
        }
    }
    if (check) {
        char err[CP_ERR_MAX], where[CP_REDIS_WHERE_MAX + 32] = "";
        struct cp_config *cfg = cp_config_load(file, err);

        if (cfg == NULL || privs_resolve(cfg, err, sizeof(err)) < 0) {
            fprintf(stderr, "chokepointd: %s\n", err);
            cp_config_free(cfg);
            return 1;
        }
        if (cfg->store_redis) {
            memcpy(where, ", fleet store redis at ", 24);
            cp_config_redis_where(cfg, where + 23, sizeof(where) - 23);
        }
        printf("%s: OK: %zu listeners, %zu classes, %zu customers, %zu "
               "counters per account%s%s\n",
               file, cfg->nlisten, cfg->nclasses, cfg->ncustomers,
               cfg->nslots, where, cfg->shadow ? ", shadow mode" : "");
        cp_config_free(cfg);
        return 0;
    }
    return run(file, sim_clock, new_store);
}
#endif
