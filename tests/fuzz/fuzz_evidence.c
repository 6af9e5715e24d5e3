/*
 * fuzz_evidence.c — libFuzzer target for stored evidence (the evidence
 * table of the store, read back at start-up): the input's first bytes are
 * a record's struct bytes under a valid header, so the fuzzer explores the
 * contents rather than the header. What unpack accepts is then used the
 * way the daemon uses an account's evidence — a message, END-OF-MESSAGE,
 * a delivery outcome, `chokepoint show`, and in fleet mode another host's
 * record merged into this host's and back — which must neither crash nor
 * trip the sanitizers, whatever the bytes said.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/evidence.h"
#include "util/inet.h"
#include "util/strbuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const double w[CP_SIG_COUNT] = {1.0, -0.5, 0.1, -0.2, 0.5, 2.0,
                                           2.0, 1.5, -0.25, 2.5, 0.5, 2.0,
                                           1.0, 0.5, 6.0, 3.0, 0.2};
    struct cp_customer cust;
    unsigned char rec[CP_EV_PACKED];
    struct cp_detection det;
    struct cp_evidence ev;
    struct cp_ev_input in;
    struct inet_addr a;
    struct strbuf o;
    uint16_t fmt = CP_EV_FORMAT, sz = (uint16_t)sizeof(ev);
    uint32_t fired;
    float msg = 0;
    char text[400];
    int64_t now;

    memset(rec, 0, sizeof(rec));
    memcpy(rec, "CPEV", 4);
    memcpy(rec + 4, &fmt, 2);
    memcpy(rec + 6, &sz, 2);
    memcpy(rec + 8, data, size < sizeof(ev) ? size : sizeof(ev));
    if (!cp_evidence_unpack(&ev, rec, sizeof(rec)))
        return 0;
    memset(&det, 0, sizeof(det));
    det.enabled = true;
    det.half_life_ms = 6 * 3600000LL;
    det.floor = -5;
    det.watch_at = 4;
    det.throttle_at = 8;
    det.block_at = 15;
    det.networks = 4;
    det.rate_factor = 4;
    det.learning = 50;
    memcpy(det.weight, w, sizeof(w));
    now = ev.t_ms + 60000;
    memset(&in, 0, sizeof(in));
    in.now_ms = now;
    in.new_message = true;
    in.sasl = true;
    in.login = str_c("ann@isp.example");
    in.sender = str_c("ann@isp.example");
    in.recipient = str_c("mum@home.example");
    in.helo = str_c("pc-ann");
    inet_parse("192.0.2.1", 9, &a);
    in.client = &a;
    cp_evidence_rcpt(&ev, &det, &in, &fired);
    {   /* fleet mode: habits merged both ways (idempotent), the suspicion
         * of the record adopted as the fleet's */
        struct cp_evidence mine;
        struct cp_ev_shared sh;

        memset(&mine, 0, sizeof(mine));
        in.host_bit = 2;
        cp_evidence_rcpt(&mine, &det, &in, &fired);
        cp_evidence_merge_habits(&mine, &ev);
        cp_evidence_merge_habits(&ev, &mine);
        memset(&sh, 0, sizeof(sh));
        sh.t_ms = ev.t_ms;
        sh.score = ev.score;
        for (int i = 0; i < CP_SIG_COUNT; i++) {
            sh.sig[i] = ev.sig[i];
            sh.fired[i] = ev.fired[i];
            sh.last_s[i] = ev.last_s[i];
        }
        cp_evidence_adopt(&mine, &det, &sh, NULL, now);
        in.host_bit = 0;
    }
    in.refused = true;
    in.now_ms = now + 1000;
    cp_evidence_rcpt(&ev, &det, &in, &fired);
    /* a customer's login: the stored record as the customer's shared one
     * too, its domains, the table of recipients delivered to */
    memset(&cust, 0, sizeof(cust));
    cust.domain[cust.ndomains++] = 42;
    in.cust = &cust;
    in.shared = &ev;
    in.rcpt_seen = CP_RCPT_NEW + (size & 1);
    in.sender = str_c("anna@acme.example");
    in.new_message = true;
    in.now_ms = now + 1500;
    cp_evidence_rcpt(&ev, &det, &in, &fired);
    cp_evidence_block_signals(&ev, &det);
    cp_evidence_eom(&ev, &det, size, now + 2000, &fired);
    cp_evidence_outcome(&ev, &det, CP_SIG_BAD_RECIPIENT, 1, &msg, now + 3000,
                        &fired);
    cp_evidence_listed(&ev, &det, now + 4000, &fired);
    cp_evidence_corroboration(&ev);
    cp_evidence_explain(&ev, &det, now + 5000, text, sizeof(text));
    sb_init(&o);
    cp_evidence_detail(&ev, &det, now + 5000, &o, true);
    cp_evidence_detail(&ev, &det, now + 5000, &o, false);
    sb_fini(&o);
    return 0;
}
