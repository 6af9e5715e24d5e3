/*
 * milter.c — Sendmail milter protocol codec, filter side, protocol version
 * 6; see milter.h for the contract.
 *
 * Design: the codec is stateless. cp_milter_frame() looks at the 5-byte
 * header only and says how long the packet is; the decoders walk one
 * packet's data with an offset that is compared with the packet length
 * before every read, and find each string's NUL with a memchr() bounded by
 * the bytes left. A decoder writes its outputs only once the whole packet
 * has been checked, so a malformed packet never half-fills them. The
 * encoders measure first and write only if the whole packet fits.
 *
 * Limits: CP_MILTER_MAX bytes of data per packet (checked on the length
 * field, before any data is buffered); a 'y' reply line of at most
 * CP_MILTER_REPLY_MAX bytes with its CRLF.
 *
 * Trust: packets come from the MTA, a local but separate process; they are
 * treated as hostile. Reply text given to the encoders may hold peer data
 * (addresses, SASL names) and is sanitised so that it cannot break the
 * SMTP reply line or be taken as a format by Sendmail.
 */
#include "core/milter.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The longest reply string: the reply line without its CRLF. */
#define REPLY_LINE_MAX (CP_MILTER_REPLY_MAX - 2)

static uint32_t
get32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
           (uint32_t)b[3];
}

static void
put32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int
cp_milter_frame(const unsigned char *buf, size_t n, uint32_t max,
                struct cp_milter_pkt *p)
{
    uint32_t len;

    if (n < 4)
        return 0;
    len = get32(buf);
    if (len == 0)
        return -1;
    if (len - 1 > max || len - 1 > CP_MILTER_MAX)
        return CP_MILTER_TOO_LONG;
    if (n - 4 < len)
        return 0;
    p->cmd = (char)buf[4];
    p->data = buf + CP_MILTER_HDR;
    p->len = len - 1;
    return (int)(4 + len);
}

/*
 * The NUL-terminated string at data[*off..len): fill *s, move *off past its
 * NUL. False if *off is at the end or no NUL follows.
 */
static bool
next_str(const struct cp_milter_pkt *p, size_t *off, struct str *s)
{
    const unsigned char *start, *nul;

    if (*off >= p->len)
        return false;
    start = p->data + *off;
    nul = memchr(start, '\0', p->len - *off);
    if (nul == NULL)
        return false;
    s->p = (const char *)start;
    s->len = (size_t)(nul - start);
    *off += s->len + 1;
    return true;
}

int
cp_milter_optneg(const struct cp_milter_pkt *p, uint32_t *version,
                 uint32_t *actions, uint32_t *protocol)
{
    if (p->len < 12)
        return -1;
    *version = get32(p->data);
    *actions = get32(p->data + 4);
    *protocol = get32(p->data + 8);
    return 0;
}

int
cp_milter_macros(const struct cp_milter_pkt *p, char *stage,
                 void (*fn)(void *arg, const char *name, size_t nlen,
                            const char *value, size_t vlen),
                 void *arg)
{
    struct str name, value;
    size_t off = 1, npairs = 0;

    if (p->len < 1)
        return -1;
    while (off < p->len) {
        if (!next_str(p, &off, &name) || !next_str(p, &off, &value))
            return -1;
        npairs++;
    }
    *stage = (char)p->data[0];
    if (fn != NULL) {
        off = 1;
        /* cannot fail now: the loop above checked every string */
        while (next_str(p, &off, &name) && next_str(p, &off, &value))
            fn(arg, name.p, name.len, value.p, value.len);
    }
    return (int)npairs; /* at most CP_MILTER_MAX / 2 */
}

/* Drop one pair of enclosing braces from s[0..*len). */
static const char *
unbrace(const char *s, size_t *len)
{
    if (*len >= 2 && s[0] == '{' && s[*len - 1] == '}') {
        *len -= 2;
        return s + 1;
    }
    return s;
}

bool
cp_milter_macro_is(const char *name, size_t nlen, const char *key)
{
    size_t klen = strlen(key);

    key = unbrace(key, &klen);
    if (name == NULL || klen == 0)
        return false;
    name = unbrace(name, &nlen);
    return nlen == klen && memcmp(name, key, klen) == 0;
}

/* The family byte and what follows it in a 'C' packet, from *off on. */
static int
connect_tail(const struct cp_milter_pkt *p, size_t off, char *family,
             uint16_t *port, struct str *addr)
{
    *family = (char)p->data[off++];
    switch (*family) {
    case CP_MILTER_FAM_UNKNOWN:
        *port = 0;
        addr->p = "";
        addr->len = 0;
        return off == p->len ? 0 : -1;
    case CP_MILTER_FAM_INET:
    case CP_MILTER_FAM_INET6:
    case CP_MILTER_FAM_UNIX:
        break;
    default:
        return -1;
    }
    if (p->len - off < 2)
        return -1;
    *port = (uint16_t)(p->data[off] << 8 | p->data[off + 1]);
    off += 2;
    if (!next_str(p, &off, addr) || off != p->len)
        return -1;
    return 0;
}

int
cp_milter_connect(const struct cp_milter_pkt *p, struct str *host,
                  char *family, uint16_t *port, struct str *addr)
{
    struct str h, a;
    size_t off = 0;
    uint16_t pt;
    char fam;

    if (!next_str(p, &off, &h) || off >= p->len)
        return -1;
    if (connect_tail(p, off, &fam, &pt, &a) != 0)
        return -1;
    *host = h;
    *family = fam;
    *port = pt;
    *addr = a;
    return 0;
}

int
cp_milter_first_arg(const struct cp_milter_pkt *p, struct str *s)
{
    struct str first, more;
    size_t off = 0;
    int n = 0;

    if (!next_str(p, &off, &first))
        return -1;
    while (off < p->len) {
        if (!next_str(p, &off, &more))
            return -1;
        n++;
    }
    *s = first;
    return n;
}

int
cp_milter_header(const struct cp_milter_pkt *p, struct str *name,
                 struct str *value)
{
    struct str n, v;
    size_t off = 0;

    if (!next_str(p, &off, &n) || n.len == 0 || !next_str(p, &off, &v) ||
        off != p->len)
        return -1;
    *name = n;
    *value = v;
    return 0;
}

const char *
cp_milter_cmd_name(char cmd)
{
    switch (cmd) {
    case CP_MILTER_C_ABORT:
        return "SMFIC_ABORT";
    case CP_MILTER_C_BODY:
        return "SMFIC_BODY";
    case CP_MILTER_C_CONNECT:
        return "SMFIC_CONNECT";
    case CP_MILTER_C_MACRO:
        return "SMFIC_MACRO";
    case CP_MILTER_C_EOB:
        return "SMFIC_BODYEOB";
    case CP_MILTER_C_HELO:
        return "SMFIC_HELO";
    case CP_MILTER_C_QUIT_NC:
        return "SMFIC_QUIT_NC";
    case CP_MILTER_C_HEADER:
        return "SMFIC_HEADER";
    case CP_MILTER_C_MAIL:
        return "SMFIC_MAIL";
    case CP_MILTER_C_EOH:
        return "SMFIC_EOH";
    case CP_MILTER_C_OPTNEG:
        return "SMFIC_OPTNEG";
    case CP_MILTER_C_QUIT:
        return "SMFIC_QUIT";
    case CP_MILTER_C_RCPT:
        return "SMFIC_RCPT";
    case CP_MILTER_C_DATA:
        return "SMFIC_DATA";
    case CP_MILTER_C_UNKNOWN:
        return "SMFIC_UNKNOWN";
    }
    return "(unknown command)";
}

int
cp_milter_put_optneg(unsigned char *out, size_t cap, uint32_t version,
                     uint32_t actions, uint32_t protocol)
{
    if (cap < CP_MILTER_OPTNEG_PKT)
        return -1;
    put32(out, CP_MILTER_OPTNEG_PKT - 4);
    out[4] = CP_MILTER_C_OPTNEG;
    put32(out + 5, version);
    put32(out + 9, actions);
    put32(out + 13, protocol);
    return CP_MILTER_OPTNEG_PKT;
}

int
cp_milter_put(unsigned char *out, size_t cap, char reply)
{
    switch (reply) {
    case CP_MILTER_R_ACCEPT:
    case CP_MILTER_R_CONTINUE:
    case CP_MILTER_R_DISCARD:
    case CP_MILTER_R_PROGRESS:
    case CP_MILTER_R_REJECT:
    case CP_MILTER_R_SKIP:
    case CP_MILTER_R_TEMPFAIL:
        break;
    default:
        return -1;
    }
    if (cap < CP_MILTER_HDR)
        return -1;
    put32(out, 1);
    out[4] = (unsigned char)reply;
    return CP_MILTER_HDR;
}

/* "4xx" or "5xx", exactly three characters. */
static bool
reply_code_ok(const char *c)
{
    return c != NULL && (c[0] == '4' || c[0] == '5') && is_digit(c[1]) &&
           is_digit(c[2]) && c[3] == '\0';
}

/* A run of 1 to 3 digits at s[*i]; moves *i past it. */
static bool
digits_1_3(const char *s, size_t *i)
{
    size_t n = 0;

    while (is_digit(s[*i])) {
        if (++n > 3)
            return false;
        (*i)++;
    }
    return n > 0;
}

/* RFC 3463 class.subject.detail, with the class of the reply code. */
static bool
dsn_ok(const char *d, char cls)
{
    size_t i = 2;

    if (d == NULL || d[0] != cls || d[1] != '.')
        return false;
    if (!digits_1_3(d, &i) || d[i++] != '.')
        return false;
    return digits_1_3(d, &i) && d[i] == '\0';
}

/*
 * Append text[0..tlen), sanitised, to line[len..) without going past max
 * bytes in all; return the new length. With line NULL, only measure.
 * The reply is 7-bit printable: controls become spaces (so no NUL, CR or
 * LF gets through), bytes of 0x80 and above '?'; with pct, each '%' is
 * doubled. When the text does not fit, it is cut before the byte that
 * does not: a "%%" pair is never split.
 */
static size_t
clean_text(char *line, size_t len, size_t max, const char *text, size_t tlen,
           bool pct)
{
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)text[i];
        size_t need = (pct && c == '%') ? 2 : 1;

        if (max - len < need)
            break;
        if (c < 0x20 || c >= 0x7f) /* SMTP replies are 7-bit printable */
            c = c >= 0x80 ? '?' : ' ';
        if (line != NULL) {
            line[len] = (char)c;
            if (need == 2)
                line[len + 1] = '%';
        }
        len += need;
    }
    return len;
}

int
cp_milter_put_reply(unsigned char *out, size_t cap, const char *code3,
                    const char *dsn, const char *text, size_t tlen)
{
    size_t dlen, head, len;
    char *line;

    if (!reply_code_ok(code3) || !dsn_ok(dsn, code3[0]) ||
        (text == NULL && tlen > 0))
        return -1;
    dlen = strlen(dsn); /* at most 9: checked by dsn_ok() */
    head = 3 + 1 + dlen;
    len = head;
    if (tlen > 0)
        len = clean_text(NULL, head + 1, REPLY_LINE_MAX, text, tlen, true);
    if (cap < CP_MILTER_HDR || cap - CP_MILTER_HDR < len + 1)
        return -1;
    line = (char *)out + CP_MILTER_HDR;
    memcpy(line, code3, 3);
    line[3] = ' ';
    memcpy(line + 4, dsn, dlen);
    if (tlen > 0) {
        line[head] = ' ';
        (void)clean_text(line, head + 1, REPLY_LINE_MAX, text, tlen, true);
    }
    line[len] = '\0';
    put32(out, (uint32_t)(len + 2)); /* command byte + string + NUL */
    out[4] = CP_MILTER_R_REPLYCODE;
    return (int)(CP_MILTER_HDR + len + 1);
}

int
cp_milter_put_quarantine(unsigned char *out, size_t cap, const char *reason,
                         size_t rlen)
{
    static const char dflt[] = "quarantined";
    size_t len;

    if (reason == NULL && rlen > 0)
        return -1;
    len = clean_text(NULL, 0, CP_MILTER_REASON_MAX, reason, rlen, false);
    if (len == 0) {
        reason = dflt;
        rlen = len = sizeof(dflt) - 1;
    }
    if (cap < CP_MILTER_HDR || cap - CP_MILTER_HDR < len + 1)
        return -1;
    (void)clean_text((char *)out + CP_MILTER_HDR, 0, CP_MILTER_REASON_MAX,
                     reason, rlen, false);
    out[CP_MILTER_HDR + len] = '\0';
    put32(out, (uint32_t)(len + 2)); /* command byte + reason + NUL */
    out[4] = CP_MILTER_R_QUARANTINE;
    return (int)(CP_MILTER_HDR + len + 1);
}
