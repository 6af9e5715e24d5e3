/*
 * fingerprint.h — content fingerprints of outbound mail and the table of
 * campaigns they reveal: the same text sent by many customers
 * within a short time is the signature of a botnet relaying through the
 * ISP, whatever each account looks like on its own.
 *
 * A fingerprint is a MinHash sketch of the message body's word 3-grams
 * (one-permutation hashing into CP_FP_BINS bins), cut into CP_FP_BANDS
 * bands of 4 bins: two messages share a band with probability about J^4
 * for a Jaccard similarity J of their 3-gram sets, so near-duplicates
 * (a template with a name or a link changed) share some band almost
 * always and unrelated mail practically never (doc/detection.md).
 *
 * The campaign table maps each band to the set of accounts that sent it,
 * as a 64-bit linear-counting sketch, forgotten when the band has not been
 * seen for `window`. Fixed size, set at creation: a band that does not
 * find its slot replaces the stalest of two.
 *
 * Pure: no I/O, no clock (callers pass the time). Thread: one owner.
 * Trust: the body is peer data; every byte is read once, within the
 * given length, and at most CP_FP_MAX_BYTES are looked at.
 */
#ifndef CP_CORE_FINGERPRINT_H
#define CP_CORE_FINGERPRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CP_FP_BINS 32
#define CP_FP_BANDS 8
#define CP_FP_MAX_BYTES (256 * 1024) /* of the body that is read */
#define CP_FP_TAG_MAX 2048      /* bytes of an HTML tag; longer: text again */
#define CP_FP_HEADER_LINES 12   /* lines of part headers (or a signature)
                                   skipped after a "--" line */

struct cp_fp {
    uint32_t band[CP_FP_BANDS]; /* never 0 */
    uint32_t words;             /* words read (of the text that counts) */
};

/*
 * The builder, fed the body as it arrives (the milter's chunks). What it
 * reads: words (runs of letters, digits and non-ASCII bytes; ASCII
 * lower-cased, digits all alike, so order numbers and dates do not make
 * copies different). What it skips: lines quoted with '>' (a reply
 * quoting a newsletter is not that newsletter), MIME boundaries and part
 * headers, HTML tags and <style>/<script> contents (one mail client's
 * boilerplate is the same for all its users). A '<' not followed by a
 * tag name is text; a tag ends at '>' or after CP_FP_TAG_MAX bytes; part
 * headers after a "--" line end at a blank line or after
 * CP_FP_HEADER_LINES lines: one stray byte cannot hide the rest.
 * Not yet: MIME decoding. A base64 or quoted-printable part is read as
 * its encoded text, so copies match only while they encode alike.
 */
struct cp_fp_builder {
    uint32_t bin[CP_FP_BINS];   /* smallest 3-gram hash per bin */
    uint32_t w1, w2;            /* the two previous word hashes */
    uint32_t cur;               /* hash of the word being read */
    uint32_t curlen;
    uint32_t words;
    size_t bytes;
    uint32_t linepos;           /* bytes into the current line */
    uint8_t skip_line;          /* 1: quoted; 3: a boundary; 2: part
                                   headers (CP_FP_HEADER_LINES at most) */
    uint8_t hdr_lines;          /* lines skipped as part headers */
    uint8_t lt;                 /* a '<' just read: a tag if a name follows */
    uint8_t in_tag;             /* inside <...> (CP_FP_TAG_MAX at most) */
    uint16_t tag_bytes;
    uint8_t in_style;           /* inside <style> or <script> */
    uint8_t tagpos;             /* bytes of its name in tag[] */
    bool tag_done;              /* the name ended (a space) */
    char tag[7];                /* the tag's name, lower-cased */
    char first;                 /* the line's first byte */
    bool line_empty;            /* the line so far is blank */
};

void cp_fp_begin(struct cp_fp_builder *b);
void cp_fp_feed(struct cp_fp_builder *b, const char *p, size_t n);
/* Returns false (no fingerprint) for a body of fewer than `min_words`
 * words: "thanks, see you" from many customers is not a campaign. */
bool cp_fp_end(struct cp_fp_builder *b, uint32_t min_words, struct cp_fp *out);
/* The whole body at once (tests, replay). */
bool cp_fp_of(const char *p, size_t n, uint32_t min_words, struct cp_fp *out);

struct cp_camp_slot {
    uint32_t key;       /* band; 0: empty */
    uint32_t last_s;    /* last seen */
    uint64_t accounts;  /* linear-counting sketch of the senders */
    uint16_t sent, bad; /* delivery outcomes of its copies: all, and
                           refused (no such user, spam) */
    bool spam;          /* the outcomes said so (sticky while seen) */
};

/* copies of one band from one account (key: band and account mixed) */
struct cp_copy_slot {
    uint32_t key;
    uint32_t last_s;
    uint32_t n;
};

struct cp_campaigns {
    struct cp_camp_slot *slot;
    struct cp_copy_slot *copy;
    uint32_t mask;      /* slots - 1 (both tables) */
    uint32_t window_s;
    uint32_t repeat;    /* copies before an account counts */
    uint32_t min_bad;   /* spam: refused copies at least, */
    double bad_share;   /* and this share of the outcomes */
    uint64_t replaced;  /* live slots taken over by another band */
};

/* `slots` is rounded up to a power of two (at least 64); the tables take
 * 36 bytes per slot. */
void cp_campaigns_init(struct cp_campaigns *c, uint32_t slots,
                       uint32_t window_s, uint32_t repeat, uint32_t min_bad,
                       double bad_share);
void cp_campaigns_fini(struct cp_campaigns *c);
struct cp_camp_info {
    uint32_t accounts;  /* distinct accounts that sent the text */
    uint32_t spam_accounts; /* the same, of the bands whose outcomes said
                               spam (0: none did) */
    uint32_t copies;    /* copies this account sent */
    bool spam;          /* a band's outcomes said spam */
    uint64_t bit;       /* the account's bit in the senders' sketches
                           (set there from its `repeat`-th copy) */
};

/*
 * Record that account `acct` (any well-mixed hash of its key) sent a
 * message with fingerprint fp at now_s. out->copies: how many messages of
 * this text the account sent within the window (this one included). An
 * account counts towards the text's senders from its `repeat`-th copy: a
 * botnet sends its text again and again, while a reply quoting a
 * newsletter, or a joke forwarded once, is one copy per person.
 * out->accounts: how many distinct accounts so counted sent any of its
 * bands since that band was last quiet for the window (an estimate, exact
 * while small, saturating near 200); out->spam: the outcomes of one of
 * its bands said spam (cp_campaigns_outcome).
 */
void cp_campaigns_add(struct cp_campaigns *c, const struct cp_fp *fp,
                      uint32_t acct, uint32_t now_s, struct cp_camp_info *out);
/*
 * A delivery outcome of a message with fingerprint fp: `bad`
 * if the recipient does not exist or the receiver refused it as spam.
 * A harvested list bounces and receivers' filters refuse spam; a chain
 * letter goes to people its senders know. With `min_bad` refused copies
 * or more, and a share of `bad_share` or more, the band is spam until it
 * is quiet for the window (min_bad 0: every band is, without outcomes).
 * At 65,535 outcomes both counts are halved.
 */
void cp_campaigns_outcome(struct cp_campaigns *c, const struct cp_fp *fp,
                          bool bad);
/*
 * Fleet mode: what the fleet knows of band `band` (every host's senders'
 * sketch, and the outcomes of every host's copies, which include this
 * host's as far as it has told them) joins this host's slot of it, if the
 * band is live here: the sketch ORed, the outcomes the larger; and, with
 * copies > 0, the copies of it account `acct` sent over the fleet join
 * this host's count of them (the larger). False if the band is not (or
 * no longer) in the table.
 */
bool cp_campaigns_merge(struct cp_campaigns *c, uint32_t band,
                        uint64_t accounts, uint32_t sent, uint32_t bad,
                        uint32_t acct, uint32_t copies, uint32_t now_s);

#endif
