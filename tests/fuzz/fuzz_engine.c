/*
 * fuzz_engine.c — libFuzzer target for the engine with hostile attribute
 * values: the input is a stream of policy requests (the codec frames them,
 * as on the wire) decided in order by a fresh engine on a configuration
 * with limits, detection, content, a customer map with domains and
 * networks; every value is the fuzzer's (logins, addresses, states, sizes,
 * queue ids, instances). Between requests the clock moves by an amount
 * the input chooses, reservations expire, and a request's queue id gets a
 * delivery outcome, a content fingerprint, a DNSBL listing and a state
 * change by a person, so those paths see hostile keys too. A decision must
 * never crash, trip the sanitizers, or give a reply that is not one line
 * of printable ASCII.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/fingerprint.h"
#include "core/lifecycle.h"
#include "core/policy.h"
#include "store/memstore.h"
#include "util/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char config_text[] =
    "daemon:\n  listen: [unix:/nonexistent/policy.sock]\n"
    "store:\n  path: /nonexistent/state.db\n"
    "identity:\n  customer_map: %s\n  ipv4_prefix: 24\n"
    "delivery:\n  max_queue_ids: 64\n  max_recipients: 1024\n"
    "content:\n  campaign_accounts: 2\n  refuse_accounts: 3\n"
    "  max_fingerprints: 64\n"
    "detection:\n  learning: 2\n"
    "classes:\n"
    "  residential:\n    limits:\n"
    "      - { metric: messages, window: 1h, max: 20 }\n"
    "      - { metric: recipients, window: 10m, max: 30 }\n"
    "      - { metric: bytes, window: 1h, max: 100000 }\n"
    "      - { metric: domains, window: 1h, max: 5, action: reject }\n"
    "  business:\n    limits:\n"
    "      - { metric: messages, window: 1m, max: 3, action: hold }\n"
    "  unauthenticated:\n    limits:\n"
    "      - { metric: messages, window: 1h, max: 5 }\n";

static const char map_text[] =
    "acme    class=business domains=acme.example,acme-shop.example\n"
    "info@acme.example   acme\n"
    "bob@acme.example    acme\n"
    "10.1.0.0/16         acme\n"
    "carol@isp.example   class=residential\n";

static struct cp_config *cfg;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[] = "/tmp/fuzz-engine-XXXXXX", path[64], map[64], err[CP_ERR_MAX];
    FILE *fp;

    (void)argc;
    (void)argv;
    msg_init("fuzz_engine", false, MSG_ERROR);
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(map, sizeof(map), "%s/customers.map", dir);
    snprintf(path, sizeof(path), "%s/chokepoint.yaml", dir);
    if ((fp = fopen(map, "w")) == NULL)
        abort();
    fputs(map_text, fp);
    fclose(fp);
    if ((fp = fopen(path, "w")) == NULL)
        abort();
    fprintf(fp, config_text, map);
    fclose(fp);
    cfg = cp_config_load(path, err);
    if (cfg == NULL) {
        fprintf(stderr, "fuzz_engine: %s\n", err);
        abort();
    }
    unlink(map);
    unlink(path);
    rmdir(dir);
    return 0;
}

static void
check_text(const struct cp_decision *d)
{
    for (const char *p = d->text; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\0')
            msg_panic("reply text with a line break");
}

/* What else the daemon does with a request's values. */
static void
side_paths(struct cp_engine *e, const struct cp_event *r,
           uint8_t pick, int64_t now)
{
    struct cp_decision d;
    struct cp_identity id;

    if (r->queue_id.p != NULL && (pick & 3) == 0)
        cp_engine_outcome(e, r->queue_id.p, r->queue_id.len,
                          r->recipient.p, r->recipient.p ? r->recipient.len : 0,
                          (enum cp_outcome)((pick >> 2) % 5), now, &d);
    if ((pick & 3) == 1) {
        struct cp_fp_builder b;
        struct cp_fp fp;
        bool have;

        cp_fp_begin(&b);
        if (r->sender.p != NULL)
            for (int i = 0; i < 40; i++) {
                cp_fp_feed(&b, r->sender.p, r->sender.len);
                cp_fp_feed(&b, " ", 1);
            }
        have = cp_fp_end(&b, 5, &fp);
        cp_engine_content(e, r, have ? &fp : NULL, now, &d);
        check_text(&d);
    }
    if ((pick & 3) == 2 && cp_identity_resolve(e->cfg, r, &id) == 0) {
        cp_engine_listed(e, id.dkey, id.dkeylen, now, &d);
        if (pick & 0x80)
            cp_engine_set_state(e, &id,
                                (pick & 0x40) ? CP_ST_MANUAL_HOLD
                                              : CP_ST_PROBATION,
                                now, &d);
    }
    if (r->queue_id.p != NULL && (pick & 0x30) == 0x30)
        cp_engine_dequeue(e, r->queue_id.p, r->queue_id.len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct policy_limits lim = {512, 64, 8192};
    struct policy_parser p;
    struct memstore *ms = memstore_new(64);
    struct cp_engine e;
    int64_t now = 1800000000000LL;
    size_t off = 0;

    ms->track_dirty = false;
    cp_engine_init(&e, cfg, &ms->base);
    policy_parser_init(&p, &lim);
    while (off < size) {
        size_t used = 0;
        enum policy_status st = policy_feed(&p, (const char *)data + off,
                                            size - off, &used);

        off += used;
        if (st == POLICY_REQUEST) {
            struct policy_request req;
            struct cp_event r;
            struct str bad;
            struct cp_decision d;
            uint8_t pick = off < size ? data[off - 1] : 0;

            policy_request_get(&p, &req);
            if (policy_event(&req, &r, &bad) != NULL)
                continue; /* the daemon answers protocol.malformed */
            /* the clock: 0 s to about 4 h, chosen by the input */
            now += (int64_t)(pick & 0x0f) * (int64_t)(pick & 0xf0) * 60000;
            cp_engine_expire(&e, now);
            if (cp_engine_decide(&e, &r, now, &d) == 0)
                check_text(&d);
            side_paths(&e, &r, pick, now);
        } else if (st != POLICY_NEED_MORE) {
            break; /* the daemon closes the connection */
        }
    }
    policy_parser_fini(&p);
    cp_engine_fini(&e);
    memstore_free(ms);
    return 0;
}
