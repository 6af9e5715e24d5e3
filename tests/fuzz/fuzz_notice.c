/*
 * fuzz_notice.c — libFuzzer target for the notices (core/notice.c): the
 * input is cut at NUL bytes into the incident's text fields and a customer
 * template; all three notices are rendered, and each must keep its
 * header block free of injected lines: every header line is "Name: value"
 * or a folded continuation (starts with a blank), never a bare line, and
 * no line is longer than RFC 5322's 998 octets.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/notice.h"
#include "util/msg.h"
#include "util/strbuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NFIELDS 11

static void
check_message(const struct strbuf *sb)
{
    const char *p = sb->data, *end = sb->data + sb->len;
    bool in_headers = true;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

        if (len > 998)
            msg_panic("notice line of %zu octets", len);
        if (in_headers) {
            if (len == 0) {
                in_headers = false;
            } else if (p[0] != ' ' && p[0] != '\t') {
                const char *colon = memchr(p, ':', len);

                if (colon == NULL || colon == p)
                    msg_panic("header line without a name: %.*s", (int)len,
                              p);
                for (const char *c = p; c < colon; c++)
                    if (*c <= ' ' || *c > '~')
                        msg_panic("bad header name: %.*s", (int)len, p);
            }
            for (size_t i = 0; i < len; i++)
                if (p[i] == '\r' || (unsigned char)p[i] > '~')
                    msg_panic("CR or 8-bit octet in a header");
        }
        p += len + 1;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1), *f[NFIELDS + 1];
    char err[CP_ERR_MAX];
    struct cp_incident in;
    struct strbuf sb;
    size_t n = 0, i = 0;

    memcpy(copy, data, size);
    copy[size] = '\0';
    f[n++] = copy;
    for (; i < size && n <= NFIELDS; i++)
        if (copy[i] == '\0')
            f[n++] = copy + i + 1;
    while (n <= NFIELDS)
        f[n++] = NULL;
    memset(&in, 0, sizeof(in));
    in.id = size;
    in.at_ms = 1793577600000LL + (int64_t)size * 1000;
    in.score = (double)size / 7;
    in.account = f[0] && f[0][0] ? f[0] : "u:x@isp.example";
    in.customer = f[1];
    in.contact = f[2] ? f[2] : "c@home.example";
    in.state = f[3] ? f[3] : "BLOCKED";
    in.prev_state = f[4];
    in.evidence = f[5];
    in.reason = f[6];
    in.client_addr = f[7];
    in.helo = f[8];
    in.sample_sender = f[9];
    in.sample_recipient = f[10];
    in.help_url = "https://isp.example/help";
    in.reporting_mta = "smtp.isp.example";
    /* the newer fields from the same input: the message, two logins, the
     * signals from the size, a release every other input */
    in.message = f[6] ? f[6] + strlen(f[6]) / 2 : NULL;
    in.logins = (const char *const[]){f[0] ? f[0] : "", f[9] ? f[9] : ""};
    in.nlogins = size % 3;
    in.nsignals = size % (CP_SIG_COUNT + 1);
    for (size_t k = 0; k < in.nsignals; k++)
        in.signals[k] = (uint8_t)((size + k * 5) % CP_SIG_COUNT);
    in.released = size % 2;
    in.change = size % 5 ? (uint64_t)size + 1 : 0; /* 0: id */
    in.actor = size % 3 ? f[1] : NULL;              /* untrusted text too */
    sb_init(&sb);
    if (cp_notice_customer(&in, "abuse@isp.example", f[11], &sb, err) == 0)
        check_message(&sb);
    sb_reset(&sb);
    if (cp_notice_arf(&in, "abuse@isp.example", "arf@isp.example", &sb,
                      err) == 0)
        check_message(&sb);
    sb_reset(&sb);
    cp_notice_webhook(&in, &sb);
    if (utf8_check(sb.data, sb.len) != sb.len)
        msg_panic("webhook body is not UTF-8");
    if (f[11] != NULL)
        cp_notice_template_check(f[11], strlen(f[11]), err);
    sb_fini(&sb);
    free(copy);
    return 0;
}
