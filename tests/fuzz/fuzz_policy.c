/*
 * fuzz_policy.c — libFuzzer target for the policy codec: the input is fed
 * in chunks whose sizes come from the first byte, every complete request is
 * decoded, and each reply built from its values must stay one framed reply.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/policy.h"
#include "util/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_reply(const struct policy_request *r)
{
    struct strbuf sb;
    char text[512];
    size_t n = r->recipient.len < sizeof(text) - 1 ? r->recipient.len
                                                   : sizeof(text) - 1;

    if (r->recipient.p == NULL)
        return;
    memcpy(text, r->recipient.p, n);
    text[n] = '\0';
    sb_init(&sb);
    policy_format_reply(&sb, "DUNNO", text);
    /* exactly one "\n\n", at the very end */
    if (sb.len < 2 || memmem(sb.data, sb.len - 2, "\n", 1) != NULL)
        msg_panic("reply framing broken");
    sb_fini(&sb);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct policy_limits lim = {256, 32, 4096};
    struct policy_parser p;
    size_t step, off = 1;

    if (size < 1)
        return 0;
    step = (size_t)data[0] + 1;
    policy_parser_init(&p, &lim);
    while (off < size) {
        size_t n = size - off < step ? size - off : step, o = 0, used;
        enum policy_status st = POLICY_NEED_MORE;

        while (o < n) {
            st = policy_feed(&p, (const char *)data + off + o, n - o, &used);
            if (used > n - o)
                msg_panic("consumed more than given");
            o += used;
            if (st == POLICY_REQUEST) {
                struct policy_request r;

                policy_request_get(&p, &r);
                check_reply(&r);
            } else if (st != POLICY_NEED_MORE) {
                break;
            }
        }
        if (st != POLICY_NEED_MORE && st != POLICY_REQUEST)
            break;
        off += n;
    }
    policy_parser_fini(&p);
    return 0;
}
