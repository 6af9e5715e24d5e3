/*
 * fuzz_maillog.c — libFuzzer target for the mail.log framer and parser:
 * the input is fed to the framer in chunks whose size comes from the first
 * byte, every line it returns is parsed, and every value of the event must
 * lie inside that line (values point into the line, never past it).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/maillog.h"
#include "util/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_in(struct str s, const char *line, size_t len)
{
    if (s.p == NULL)
        return;
    if (s.p < line || s.len > len || s.p + s.len > line + len)
        msg_panic("maillog value outside its line");
}

static void
parse_line(struct maillog_ctx *c, const char *line, size_t len)
{
    struct maillog_event ev;
    const struct str *f[] = {&ev.host,
                                     &ev.service,
                                     &ev.instance,
                                     &ev.program,
                                     &ev.queue_id,
                                     &ev.client_name,
                                     &ev.client_addr,
                                     &ev.sasl_method,
                                     &ev.sasl_username,
                                     &ev.orig_queue_id,
                                     &ev.message_id,
                                     &ev.from,
                                     &ev.to,
                                     &ev.relay,
                                     &ev.dsn,
                                     &ev.status,
                                     &ev.new_queue_id,
                                     &ev.reject_stage};

    if (len > MAILLOG_MAX_LINE)
        msg_panic("framer returned a line over MAILLOG_MAX_LINE");
    if (maillog_parse(c, line, len, &ev) >= MAILLOG_KIND_COUNT)
        msg_panic("bad kind");
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        check_in(*f[i], line, len);
    if (ev.queue_id.p != NULL && ev.queue_id.len > MAILLOG_MAX_QUEUE_ID)
        msg_panic("queue id over MAILLOG_MAX_QUEUE_ID");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct maillog_framer fr;
    struct maillog_ctx ctx;
    const char *in = (const char *)data, *line;
    size_t step, off = 1, used, len;

    if (size < 1)
        return 0;
    step = (size_t)data[0] * 37 + 1;
    /* Year 0 (guess against a fixed "now") or a fixed year. */
    maillog_ctx_init(&ctx, data[0] & 1 ? 2026 : 0, 1795000000000LL);
    maillog_framer_init(&fr);
    while (off < size) {
        size_t n = size - off < step ? size - off : step, o = 0;

        while (o < n) {
            enum maillog_frame st = maillog_framer_feed(
                &fr, in + off + o, n - o, &used, &line, &len);

            o += used;
            if (st == MAILLOG_LINE)
                parse_line(&ctx, line, len);
        }
        off += n;
    }
    if (maillog_framer_finish(&fr, &line, &len) == MAILLOG_LINE)
        parse_line(&ctx, line, len);
    return 0;
}
