/*
 * milter.c — the content service: one milter session per connection from
 * the MTA (Postfix smtpd_milters, Sendmail INPUT_MAIL_FILTER). It reads the
 * client address (CONNECT), the SASL login and queue id (macros), the
 * envelope sender (MAIL) and the body, fingerprints the body as it
 * arrives (core/fingerprint.h) and at end of message asks the engine
 * (cp_engine_content): the answer is "continue", or a 4xx/5xx reply when
 * the account's state or a campaign refuses the message.
 *
 * What it never does: change the message (no actions are negotiated but
 * quarantine, for block_action: hold), or wait for anything (the decision
 * is made on the loop thread from memory, like a policy reply).
 *
 * Trust: the MTA's bytes are peer data. Packets are framed by the codec
 * (core/milter.h) with its length limit; a framing error, an unknown
 * command or a malformed packet is logged (escaped, truncated) and the
 * connection closed: Postfix then applies milter_default_action (tempfail
 * by default; "accept" is the usual choice for a filter that only
 * watches). At most CP_FP_MAX_BYTES of a body are read; the rest is
 * skipped (SMFIR_SKIP) where the MTA allows it.
 */
#include <stdlib.h>
#include <string.h>

#include "core/explain.h"
#include "core/fingerprint.h"
#include "core/milter.h"
#include "daemon/daemon.h"
#include "util/msg.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define FIELD_MAX 256 /* bytes kept of a login, sender, queue id, address */
/* data bytes in one packet: Postfix's are small (body chunks: 64 KiB); a
 * peer that announces more is not an MTA */
#define MILTER_MAX_PACKET (256 * 1024)
/* Bytes held in partial packets by all milter connections together: a
 * connection whose packet would go over it is closed. Postfix sends body
 * chunks of at most 64 KiB, so this is 2,000 connections mid-chunk. */
#define MILTER_MAX_BUFFERED (128u * 1024 * 1024)
/* A buffer larger than this is freed once its packet is done. */
#define MILTER_KEEP_BUFFER 8192

struct field {
    char s[FIELD_MAX];
    size_t len;
};

struct milter_sess {
    struct strbuf in;          /* bytes not yet framed */
    size_t counted;            /* in.cap, as counted in d->milter_buffered */
    uint32_t protocol;         /* what was negotiated (CP_MILTER_P_*) */
    bool negotiated;
    bool quarantine;           /* the MTA lets us hold a message */
    struct field client, login, sender, qid;
    struct cp_fp_builder fp;
    bool in_message;           /* since MAIL, until its end or abort */
    uint64_t messages;
};

struct milter_sess *
milter_sess_new(void)
{
    struct milter_sess *m = xcalloc(1, sizeof(*m));

    sb_init(&m->in);
    cp_fp_begin(&m->fp);
    return m;
}

void
milter_sess_free(struct daemon *d, struct milter_sess *m)
{
    if (m == NULL)
        return;
    d->milter_buffered -= m->counted;
    sb_fini(&m->in);
    free(m);
}

bool
milter_pending(const struct milter_sess *m)
{
    return m->in.len > 0;
}

static void
set_field(struct field *f, const char *p, size_t n)
{
    if (n >= sizeof(f->s))
        n = sizeof(f->s) - 1;
    memcpy(f->s, p, n);
    f->s[n] = '\0';
    f->len = n;
}

static struct str
field_str(const struct field *f)
{
    struct str s = {f->len ? f->s : NULL, f->len};

    return s;
}

/* A new message (MAIL, or the end or abort of the previous one). The
 * queue id is kept: its macro may come before MAIL (Postfix sends `i`
 * with the MAIL macros, Sendmail only there by default); it is forgotten
 * when the message ends. */
static void
message_reset(struct milter_sess *m)
{
    m->in_message = false;
    m->sender.len = 0;
    cp_fp_begin(&m->fp);
}

static void
on_macro(void *arg, const char *name, size_t nlen, const char *value,
         size_t vlen)
{
    struct milter_sess *m = arg;

    if (cp_milter_macro_is(name, nlen, "auth_authen"))
        set_field(&m->login, value, vlen);
    else if (cp_milter_macro_is(name, nlen, "i"))
        set_field(&m->qid, value, vlen);
    else if (cp_milter_macro_is(name, nlen, "client_addr") &&
             m->client.len == 0)
        set_field(&m->client, value, vlen);
}

static void
put(struct strbuf *out, char reply)
{
    unsigned char b[CP_MILTER_HDR];
    int n = cp_milter_put(b, sizeof(b), reply);

    if (n > 0)
        sb_append(out, (const char *)b, (size_t)n);
}

static void
negotiate(struct milter_sess *m, uint32_t version, uint32_t actions,
          uint32_t offered, struct strbuf *out)
{
    /* steps we do not need (every step we keep gets a reply: the NR_*
     * "no reply" flags would save a round trip each, at the price of
     * MTAs and test tools that handle them differently) */
    uint32_t want = CP_MILTER_P_NOHELO | CP_MILTER_P_NORCPT |
                    CP_MILTER_P_NOHDRS | CP_MILTER_P_NOEOH |
                    CP_MILTER_P_NOUNKNOWN | CP_MILTER_P_NODATA |
                    CP_MILTER_P_SKIP;
    unsigned char b[CP_MILTER_OPTNEG_PKT];
    int n;

    m->protocol = want & offered;
    m->quarantine = (actions & CP_MILTER_A_QUARANTINE) != 0;
    m->negotiated = true;
    n = cp_milter_put_optneg(b, sizeof(b),
                             version < CP_MILTER_VERSION ? version
                                                         : CP_MILTER_VERSION,
                             m->quarantine ? CP_MILTER_A_QUARANTINE : 0,
                             m->protocol);
    if (n > 0)
        sb_append(out, (const char *)b, (size_t)n);
}

/* The engine's answer as a milter reply. */
static void
reply(struct milter_sess *m, const struct cp_decision *dec,
      struct strbuf *out)
{
    unsigned char b[CP_MILTER_REPLY_PKT_MAX];
    const char *text = dec->text;
    char code[8];
    int n = -1;

    switch (dec->action) {
    case CP_ACT_DEFER:
    case CP_ACT_REJECT:
        if (dec->code != 0 && dec->status[0] != '\0') {
            snprintf(code, sizeof(code), "%u", dec->code);
            n = cp_milter_put_reply(b, sizeof(b), code, dec->status, text,
                                    strlen(text));
        }
        if (n > 0) {
            sb_append(out, (const char *)b, (size_t)n);
            return;
        }
        put(out, dec->action == CP_ACT_DEFER ? CP_MILTER_R_TEMPFAIL
                                             : CP_MILTER_R_REJECT);
        return;
    case CP_ACT_HOLD:
        if (m->quarantine &&
            (n = cp_milter_put_quarantine(b, sizeof(b), text,
                                          strlen(text))) > 0) {
            sb_append(out, (const char *)b, (size_t)n);
            put(out, CP_MILTER_R_CONTINUE);
            return;
        }
        put(out, CP_MILTER_R_TEMPFAIL); /* cannot hold: keep it queued */
        return;
    default:
        put(out, CP_MILTER_R_CONTINUE);
    }
}

static void
end_of_message(struct daemon *d, struct milter_sess *m, struct strbuf *out)
{
    struct cp_event ev;
    struct cp_decision dec;
    struct cp_fp fp;
    bool have = cp_fp_end(&m->fp, d->cfg->content.min_words, &fp);
    int64_t now = daemon_now_ms();
    char err[CP_ERR_MAX];

    memset(&ev, 0, sizeof(ev));
    ev.stage = CP_STAGE_CONTENT;
    ev.queue_id = field_str(&m->qid);
    ev.sasl_username = field_str(&m->login);
    ev.sender = field_str(&m->sender);
    ev.client_address = field_str(&m->client);
    m->messages++;
    if (cp_engine_content(&d->engine, &ev, have ? &fp : NULL, now, &dec) < 0)
        msg_debug("milter: message %s: no account (no login, no client "
                  "address): not looked at",
                  m->qid.len ? m->qid.s : "?");
    else {
        daemon_log_decision(d, &dec, &ev,
                            incident_apply(d, &dec, &ev, NULL, now, err),
                            now);
    }
    reply(m, &dec, out);
    message_reset(m);
    m->qid.len = 0;
}

/* One packet. 0, or -1 (logged; close), 1 (the MTA quit). */
static int
packet(struct daemon *d, struct milter_sess *m, const char *peer,
       const struct cp_milter_pkt *p, struct strbuf *out)
{
    struct str s, host, addr;
    uint32_t version, actions, protocol;
    char family, stage;
    uint16_t port;

    if (!m->negotiated && p->cmd != CP_MILTER_C_OPTNEG) {
        peer_warn(d, "%s: milter: %s before option negotiation; closing", peer,
                 cp_milter_cmd_name(p->cmd));
        return -1;
    }
    switch (p->cmd) {
    case CP_MILTER_C_OPTNEG:
        if (cp_milter_optneg(p, &version, &actions, &protocol) < 0 ||
            version < 2)
            break;
        negotiate(m, version, actions, protocol, out);
        return 0;
    case CP_MILTER_C_MACRO:
        if (cp_milter_macros(p, &stage, on_macro, m) < 0)
            break;
        return 0;
    case CP_MILTER_C_CONNECT:
        if (cp_milter_connect(p, &host, &family, &port, &addr) < 0)
            break;
        if (family == CP_MILTER_FAM_INET || family == CP_MILTER_FAM_INET6)
            set_field(&m->client, addr.p, addr.len);
        else
            m->client.len = 0;
        put(out, CP_MILTER_R_CONTINUE);
        return 0;
    case CP_MILTER_C_MAIL:
        if (cp_milter_first_arg(p, &s) < 0)
            break;
        message_reset(m);
        m->in_message = true;
        if (s.len >= 2 && s.p[0] == '<' && s.p[s.len - 1] == '>') {
            s.p++;
            s.len -= 2;
        }
        set_field(&m->sender, s.p, s.len);
        put(out, CP_MILTER_R_CONTINUE);
        return 0;
    case CP_MILTER_C_BODY:
        if (m->in_message) /* a body without MAIL is nobody's */
            cp_fp_feed(&m->fp, (const char *)p->data, p->len);
        put(out, m->fp.bytes >= CP_FP_MAX_BYTES &&
                         (m->protocol & CP_MILTER_P_SKIP)
                     ? CP_MILTER_R_SKIP
                     : CP_MILTER_R_CONTINUE);
        return 0;
    case CP_MILTER_C_EOB:
        if (!m->in_message) {
            put(out, CP_MILTER_R_CONTINUE);
            m->qid.len = 0;
            return 0;
        }
        if (p->len > 0) /* a last body chunk may come with it */
            cp_fp_feed(&m->fp, (const char *)p->data, p->len);
        end_of_message(d, m, out);
        return 0;
    case CP_MILTER_C_ABORT:
        message_reset(m);
        m->qid.len = 0;
        return 0;
    case CP_MILTER_C_QUIT_NC: /* the connection is reused for another */
        message_reset(m);
        m->client.len = m->login.len = m->qid.len = 0;
        return 0;
    case CP_MILTER_C_QUIT:
        return 1;
    case CP_MILTER_C_HELO:
    case CP_MILTER_C_RCPT:
    case CP_MILTER_C_HEADER:
    case CP_MILTER_C_EOH:
    case CP_MILTER_C_DATA:
    case CP_MILTER_C_UNKNOWN:
        put(out, CP_MILTER_R_CONTINUE); /* not asked for; sent anyway */
        return 0;
    default: {
        char esc[16];

        peer_warn(d, "%s: milter: unknown command '%s'; closing", peer,
                 str_escape(esc, sizeof(esc), &p->cmd, 1, 4));
        return -1;
    }
    }
    peer_warn(d, "%s: milter: malformed %s packet (%u bytes); closing", peer,
             cp_milter_cmd_name(p->cmd), (unsigned)p->len);
    return -1;
}

int
milter_feed(struct daemon *d, struct milter_sess *m, const char *peer,
            const char *data, size_t n, struct strbuf *out)
{
    size_t off = 0;
    int rc = 0;

    if (d->milter_buffered - m->counted + m->in.len + n > MILTER_MAX_BUFFERED) {
        peer_warn(d, "%s: milter: closing: partial packets of all milter "
                     "connections would hold more than %u MiB",
                  peer, MILTER_MAX_BUFFERED >> 20);
        return -1;
    }
    sb_append(&m->in, data, n);
    while (rc == 0 && off < m->in.len) {
        const unsigned char *b = (const unsigned char *)m->in.data + off;
        struct cp_milter_pkt p;
        int used;

        used = cp_milter_frame(b, m->in.len - off, MILTER_MAX_PACKET, &p);
        if (used == 0)
            break;
        if (used == CP_MILTER_TOO_LONG) {
            peer_warn(d, "%s: milter: bad packet length (more than %u bytes); "
                     "closing",
                     peer, (unsigned)MILTER_MAX_PACKET);
            rc = -1;
            break;
        }
        if (used < 0) {
            char esc[64];

            peer_warn(d, "%s: milter: bad packet length near \"%s\"; closing",
                     peer,
                     str_escape(esc, sizeof(esc), m->in.data + off,
                                m->in.len - off, 16));
            rc = -1;
            break;
        }
        rc = packet(d, m, peer, &p, out);
        off += (size_t)used;
    }
    /* keep what is left of an incomplete packet; give a large buffer back
     * once its packet is done */
    if (off > 0) {
        memmove(m->in.data, m->in.data + off, m->in.len - off);
        m->in.len -= off;
    }
    if (m->in.len == 0 && m->in.cap > MILTER_KEEP_BUFFER) {
        sb_fini(&m->in);
        sb_init(&m->in);
    }
    d->milter_buffered += m->in.cap;
    d->milter_buffered -= m->counted;
    m->counted = m->in.cap;
    return rc;
}
