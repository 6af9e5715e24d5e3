/*
 * fuzz_fingerprint.c — libFuzzer target for the body fingerprint and the
 * campaign table: the input is a message body fed to the builder in
 * chunks whose sizes come from the first byte; it must give the same
 * fingerprint as when fed whole, and the fingerprint goes through the
 * campaign table (a small one, so slots are shared and replaced) with its
 * delivery outcomes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/fingerprint.h"
#include "util/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cp_campaigns camp;
    static uint32_t now = 1;
    struct cp_fp_builder b;
    struct cp_fp whole, parts;
    struct cp_camp_info ci;
    size_t step, off = 0;
    bool a, p;

    if (size < 1)
        return 0;
    if (camp.slot == NULL)
        cp_campaigns_init(&camp, 64, 3600, 2, 2, 0.1);
    step = (size_t)data[0] % 64 + 1;
    data++;
    size--;
    a = cp_fp_of((const char *)data, size, 3, &whole);
    cp_fp_begin(&b);
    while (off < size) {
        size_t n = size - off < step ? size - off : step;

        cp_fp_feed(&b, (const char *)data + off, n);
        off += n;
    }
    p = cp_fp_end(&b, 3, &parts);
    if (a != p || (a && memcmp(whole.band, parts.band, sizeof(whole.band))))
        msg_panic("fingerprint depends on how the body is split");
    if (!a)
        return 0;
    for (int j = 0; j < CP_FP_BANDS; j++)
        if (whole.band[j] == 0)
            msg_panic("band 0 (the empty slot's key)");
    now += (uint32_t)(size % 4000);
    cp_campaigns_add(&camp, &whole, (uint32_t)size * 2654435761u, now, &ci);
    cp_campaigns_outcome(&camp, &whole, size % 3 == 0);
    if (ci.accounts > 200 || ci.spam_accounts > ci.accounts || ci.copies == 0)
        msg_panic("campaign counts out of range");
    return 0;
}
