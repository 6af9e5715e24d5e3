/*
 * fingerprint.c — see fingerprint.h.
 *
 * MinHash by one-permutation hashing: each word 3-gram is hashed once to
 * 64 bits; the top 5 bits choose its bin, the low 32 bits compete for the
 * bin's minimum. Bins no 3-gram reached borrow from the next bin that has
 * one (rotation densification), so short texts still fill all bands.
 * Hand-written (doc/design.md): no Debian library sketches text this
 * way, and the code is a page; the hashes are xxhash and splitmix64.
 */
#include "core/fingerprint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "util/rng.h"
#include "util/xalloc.h"

#define EMPTY UINT32_MAX
#define WORD_MAX 64 /* bytes of a word that are hashed */

void
cp_fp_begin(struct cp_fp_builder *b)
{
    memset(b, 0, sizeof(*b));
    for (int i = 0; i < CP_FP_BINS; i++)
        b->bin[i] = EMPTY;
    b->cur = 2166136261u;
    b->line_empty = true;
}

static void
end_word(struct cp_fp_builder *b)
{
    if (b->curlen == 0)
        return;
    if (++b->words >= 3) {
        uint64_t x = ((uint64_t)b->w2 << 32 | b->w1) ^
                     (uint64_t)b->cur * 0xff51afd7ed558ccdULL;
        uint64_t h = rng_splitmix(&x); /* a mixer here, not randomness */
        unsigned bin = (unsigned)(h >> 59);

        if ((uint32_t)h < b->bin[bin])
            b->bin[bin] = (uint32_t)h;
    }
    b->w2 = b->w1;
    b->w1 = b->cur;
    b->cur = 2166136261u;
    b->curlen = 0;
}

static bool
tag_is(const struct cp_fp_builder *b, const char *name)
{
    size_t n = strlen(name);

    return b->tagpos == n && memcmp(b->tag, name, n) == 0;
}

/* '>' closed a tag: <style> and <script> hide what follows */
static void
end_tag(struct cp_fp_builder *b)
{
    if (tag_is(b, "style") || tag_is(b, "script"))
        b->in_style = 1;
    else if (tag_is(b, "/style") || tag_is(b, "/script"))
        b->in_style = 0;
    b->in_tag = 0;
    b->tagpos = 0;
    b->tag_bytes = 0;
}

static void
end_line(struct cp_fp_builder *b)
{
    end_word(b);
    if (b->skip_line == 3) {    /* a boundary: part headers follow */
        b->skip_line = 2;
        b->hdr_lines = 0;
    } else if (b->skip_line == 2) { /* they end with a blank line */
        b->skip_line = b->line_empty || ++b->hdr_lines >= CP_FP_HEADER_LINES
                           ? 0
                           : 2;
    } else {
        b->skip_line = 0;
    }
    b->linepos = 0;
    b->line_empty = true;
    b->lt = 0;
}

void
cp_fp_feed(struct cp_fp_builder *b, const char *p, size_t n)
{
    if (b->bytes >= CP_FP_MAX_BYTES)
        return;
    if (n > CP_FP_MAX_BYTES - b->bytes)
        n = CP_FP_MAX_BYTES - b->bytes;
    b->bytes += n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == '\n') {
            end_line(b);
            continue;
        }
        if (c != '\r' && c != ' ' && c != '\t')
            b->line_empty = false;
        /* line starts: "> quoted", "--boundary" (and a "-- " signature) */
        if (b->linepos == 0 && c == '>' && b->skip_line == 0)
            b->skip_line = 1;
        else if (b->linepos == 1 && c == '-' && b->first == '-' &&
                 b->skip_line == 0)
            b->skip_line = 3;
        if (b->linepos == 0)
            b->first = (char)c;
        if (b->linepos < UINT32_MAX)
            b->linepos++;
        if (b->skip_line != 0) {
            end_word(b);
            continue;
        }
        if (b->lt) { /* "<" then a name, "/", "!" or "?": a tag */
            b->lt = 0;
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                c == '/' || c == '!' || c == '?') {
                b->in_tag = 1;
                b->tagpos = 0;
                b->tag_bytes = 0;
                b->tag_done = c == '!' || c == '?';
            }
        }
        if (b->in_tag) {
            if (c == '>' || ++b->tag_bytes > CP_FP_TAG_MAX)
                end_tag(b);
            else if (c == ' ' || c == '\t' || c == '\r')
                b->tag_done = true;
            else if (!b->tag_done && b->tagpos < sizeof(b->tag))
                b->tag[b->tagpos++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            else if (!b->tag_done)
                b->tagpos = UINT8_MAX; /* a longer name: none we look for */
            continue;
        }
        if (c == '<') {
            end_word(b);
            b->lt = 1;
            continue;
        }
        if (b->in_style)
            continue;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c >= 0x80) {
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c + 32);
            else if (c >= '0' && c <= '9')
                c = '0';
            if (b->curlen < WORD_MAX) {
                b->cur = (b->cur ^ c) * 16777619u;
                b->curlen++;
            }
        } else {
            end_word(b);
        }
    }
}

bool
cp_fp_end(struct cp_fp_builder *b, uint32_t min_words, struct cp_fp *out)
{
    uint32_t bin[CP_FP_BINS];
    int filled = 0;

    end_word(b);
    memset(out, 0, sizeof(*out));
    out->words = b->words;
    if (b->words < 3 || b->words < min_words)
        return false;
    for (int i = 0; i < CP_FP_BINS; i++)
        filled += b->bin[i] != EMPTY;
    if (filled == 0)
        return false;
    for (int i = 0; i < CP_FP_BINS; i++) {
        int d = 0;

        while (b->bin[(i + d) % CP_FP_BINS] == EMPTY)
            d++;
        bin[i] = b->bin[(i + d) % CP_FP_BINS] ^ (uint32_t)d * 0x9e3779b9u;
    }
    for (int j = 0; j < CP_FP_BANDS; j++) {
        uint32_t h = XXH32(&bin[j * (CP_FP_BINS / CP_FP_BANDS)],
                           sizeof(uint32_t) * (CP_FP_BINS / CP_FP_BANDS),
                           (uint32_t)j);

        out->band[j] = h != 0 ? h : 1;
    }
    return true;
}

bool
cp_fp_of(const char *p, size_t n, uint32_t min_words, struct cp_fp *out)
{
    struct cp_fp_builder b;

    cp_fp_begin(&b);
    cp_fp_feed(&b, p, n);
    return cp_fp_end(&b, min_words, out);
}

/* ---- the campaign table ---- */

void
cp_campaigns_init(struct cp_campaigns *c, uint32_t slots, uint32_t window_s,
                  uint32_t repeat, uint32_t min_bad, double bad_share)
{
    uint32_t n = 64;

    while (n < slots && n < (1u << 28))
        n <<= 1;
    c->slot = xcalloc(n, sizeof(*c->slot));
    c->copy = xcalloc(n, sizeof(*c->copy));
    c->mask = n - 1;
    c->window_s = window_s;
    c->repeat = repeat;
    c->min_bad = min_bad;
    c->bad_share = bad_share;
    c->replaced = 0;
}

void
cp_campaigns_fini(struct cp_campaigns *c)
{
    free(c->slot);
    free(c->copy);
    c->slot = NULL;
    c->copy = NULL;
}

static bool
stale(const struct cp_campaigns *c, const struct cp_camp_slot *s,
      uint32_t now_s)
{
    return s->key == 0 || now_s - s->last_s > c->window_s;
}

static uint32_t
estimate(uint64_t sketch)
{
    int zeros = 64 - __builtin_popcountll(sketch);

    long n = zeros == 0 ? 200 : lround(-64.0 * log(zeros / 64.0));

    return n > 200 ? 200 : (uint32_t)n; /* saturates: 64 bits */
}

/* The slot of the pair at `i` for a new key: an empty one, else the
 * one seen longest ago (both tables are 2-way). */
#define VICTIM(tab, i)                                                      \
    ((tab)[i].key == 0                ? &(tab)[i]                            \
     : (tab)[(i) ^ 1].key == 0        ? &(tab)[(i) ^ 1]                      \
     : (tab)[i].last_s <= (tab)[(i) ^ 1].last_s ? &(tab)[i] : &(tab)[(i) ^ 1])

/* The slot of `key`, or NULL; with `victim` the one to take instead. */
static struct cp_camp_slot *
find(const struct cp_campaigns *c, uint32_t key, struct cp_camp_slot **victim)
{
    struct cp_camp_slot *a = &c->slot[key & c->mask];
    struct cp_camp_slot *b = &c->slot[(key & c->mask) ^ 1];

    if (a->key == key)
        return a;
    if (b->key == key)
        return b;
    if (victim != NULL)
        *victim = VICTIM(c->slot, key & c->mask);
    return NULL;
}

static uint32_t
copy_key(uint32_t band, uint32_t acct)
{
    return (uint32_t)(((uint64_t)band << 32 | acct) * 0x9e3779b97f4a7c15ULL >>
                      32) | 1;
}

/* One more copy of band `band` from account `acct`: how many within the
 * window now. */
static uint32_t
count_copy(struct cp_campaigns *c, uint32_t band, uint32_t acct,
           uint32_t now_s)
{
    uint32_t key = copy_key(band, acct), i = key & c->mask;
    struct cp_copy_slot *s = c->copy[i].key == key       ? &c->copy[i]
                             : c->copy[i ^ 1].key == key ? &c->copy[i ^ 1]
                                                         : NULL;

    if (s == NULL) {
        s = VICTIM(c->copy, i);
        s->key = key;
        s->n = 0;
    } else if (now_s - s->last_s > c->window_s) {
        s->n = 0;
    }
    s->last_s = now_s;
    if (s->n < UINT32_MAX)
        s->n++;
    return s->n;
}

void
cp_campaigns_add(struct cp_campaigns *c, const struct cp_fp *fp, uint32_t acct,
                 uint32_t now_s, struct cp_camp_info *out)
{
    uint64_t bit = 1ULL << (((uint64_t)acct * 0x9e3779b97f4a7c15ULL) >> 58);

    memset(out, 0, sizeof(*out));
    for (int j = 0; j < CP_FP_BANDS; j++) {
        uint32_t n = count_copy(c, fp->band[j], acct, now_s);

        out->copies = n > out->copies ? n : out->copies;
    }
    for (int j = 0; j < CP_FP_BANDS; j++) {
        struct cp_camp_slot *v = NULL, *s = find(c, fp->band[j], &v);
        uint32_t n;
        bool spam;

        if (s == NULL || stale(c, s, now_s)) {
            if (s == NULL) {
                s = v;
                c->replaced += !stale(c, s, now_s);
            }
            s->key = fp->band[j];
            s->accounts = 0;
            s->sent = s->bad = 0;
            s->spam = false;
        }
        s->last_s = now_s;
        out->bit = bit;
        if (out->copies >= c->repeat)
            s->accounts |= bit;
        n = estimate(s->accounts);
        spam = s->spam || c->min_bad == 0;
        out->accounts = n > out->accounts ? n : out->accounts;
        /* spam and many senders: of one band, so a delivered text that
         * shares a band with a spam variant is not taken for it */
        if (spam && n > out->spam_accounts)
            out->spam_accounts = n;
        out->spam |= spam;
    }
}

/* A band's outcomes: spam with min_bad refused copies and bad_share of
 * all. */
static void
judge(const struct cp_campaigns *c, struct cp_camp_slot *s)
{
    if (s->bad >= c->min_bad && s->bad >= c->bad_share * s->sent)
        s->spam = true;
}

bool
cp_campaigns_merge(struct cp_campaigns *c, uint32_t band, uint64_t accounts,
                   uint32_t sent, uint32_t bad, uint32_t acct,
                   uint32_t copies, uint32_t now_s)
{
    struct cp_camp_slot *s = find(c, band, NULL);

    if (s == NULL || stale(c, s, now_s))
        return false;
    s->accounts |= accounts;
    if (copies > 0) { /* the account's copies over the fleet */
        uint32_t key = copy_key(band, acct), i = key & c->mask;
        struct cp_copy_slot *k = c->copy[i].key == key       ? &c->copy[i]
                                 : c->copy[i ^ 1].key == key ? &c->copy[i ^ 1]
                                                             : NULL;

        if (k != NULL && now_s - k->last_s <= c->window_s && copies > k->n)
            k->n = copies;
    }
    if (sent > UINT16_MAX || bad > sent) /* (Redis halves at 65,535) */
        return true;
    if (sent > s->sent)
        s->sent = (uint16_t)sent;
    if (bad > s->bad)
        s->bad = (uint16_t)bad;
    if (s->bad > s->sent)
        s->bad = s->sent;
    judge(c, s);
    return true;
}

void
cp_campaigns_outcome(struct cp_campaigns *c, const struct cp_fp *fp, bool bad)
{
    for (int j = 0; j < CP_FP_BANDS; j++) {
        struct cp_camp_slot *s = find(c, fp->band[j], NULL);

        if (s == NULL)
            continue;
        if (s->sent == UINT16_MAX) { /* keep the share, forget the past */
            s->sent /= 2;
            s->bad /= 2;
        }
        s->sent++;
        s->bad += bad;
        judge(c, s);
    }
}
