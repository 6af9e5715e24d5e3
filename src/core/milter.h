/*
 * milter.h — codec for the Sendmail milter protocol, filter side, version 6
 * (we are the filter; Postfix or Sendmail is the MTA and drives the talk).
 *
 * Wire format: every packet is a 32-bit big-endian length, then one command
 * byte, then length-1 bytes of command data. Strings inside the data are
 * NUL-terminated; integers are big-endian.
 *
 * This module only frames, decodes and encodes; it keeps no state, does no
 * I/O, no logging and no allocation. Decoded strings are borrowed: they point
 * into the caller's buffer and stay valid as long as that buffer does. The
 * caller owns the receive buffer and the protocol state machine (which reply
 * each command needs; see the notes at the end of this file).
 *
 * Trust: everything decoded here is peer data. Every read is bounded by the
 * packet length, and nothing relies on a NUL after the packet. Limits:
 *   CP_MILTER_MAX        command data bytes in one packet (the length field
 *                        minus the command byte)
 *   CP_MILTER_REPLY_MAX  bytes of the SMTP reply line a 'y' reply makes the
 *                        MTA send, CRLF included (RFC 5321 reply line limit)
 *   CP_MILTER_REASON_MAX bytes of a quarantine reason
 */
#ifndef CP_CORE_MILTER_H
#define CP_CORE_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/str.h"

#define CP_MILTER_VERSION 6         /* the protocol version we speak */
#define CP_MILTER_MAX (1024 * 1024) /* largest packet we accept (len field) */
#define CP_MILTER_HDR 5             /* length field + command byte */
#define CP_MILTER_REPLY_MAX 512     /* SMTP reply line, CRLF included */
/* Room for any packet cp_milter_put_reply() can write. */
#define CP_MILTER_REPLY_PKT_MAX (CP_MILTER_HDR + CP_MILTER_REPLY_MAX - 1)
#define CP_MILTER_OPTNEG_PKT 17  /* bytes cp_milter_put_optneg() writes */
#define CP_MILTER_REASON_MAX 255 /* bytes of a quarantine reason */
/* Room for any packet cp_milter_put_quarantine() can write. */
#define CP_MILTER_QUARANTINE_PKT_MAX (CP_MILTER_HDR + CP_MILTER_REASON_MAX + 1)

/* Commands from the MTA (SMFIC_*). */
#define CP_MILTER_C_ABORT 'A'   /* forget the message; no reply */
#define CP_MILTER_C_BODY 'B'    /* body chunk, raw bytes, CRLF lines */
#define CP_MILTER_C_CONNECT 'C' /* client host, family, port, address */
#define CP_MILTER_C_MACRO 'D'   /* macros for the next command; no reply */
#define CP_MILTER_C_EOB 'E'     /* end of body; final decision */
#define CP_MILTER_C_HELO 'H'    /* HELO/EHLO argument */
#define CP_MILTER_C_QUIT_NC 'K' /* quit, a new connection follows */
#define CP_MILTER_C_HEADER 'L'  /* header name, value */
#define CP_MILTER_C_MAIL 'M'    /* envelope sender, ESMTP args */
#define CP_MILTER_C_EOH 'N'     /* end of headers */
#define CP_MILTER_C_OPTNEG 'O'  /* option negotiation */
#define CP_MILTER_C_QUIT 'Q'    /* quit; no reply */
#define CP_MILTER_C_RCPT 'R'    /* envelope recipient, ESMTP args */
#define CP_MILTER_C_DATA 'T'    /* DATA command */
#define CP_MILTER_C_UNKNOWN 'U' /* unknown SMTP command, as sent */

/* Replies from the filter (SMFIR_*) that this codec can encode. */
#define CP_MILTER_R_ACCEPT 'a'     /* accept the message (or connection) */
#define CP_MILTER_R_CONTINUE 'c'   /* go on */
#define CP_MILTER_R_DISCARD 'd'    /* accept and silently drop the message */
#define CP_MILTER_R_PROGRESS 'p'   /* still working: resets the MTA timer */
#define CP_MILTER_R_QUARANTINE 'q' /* hold the message (at 'E' only) */
#define CP_MILTER_R_REJECT 'r'     /* 5xx with the MTA's default text */
#define CP_MILTER_R_SKIP 's'       /* no more body chunks, please */
#define CP_MILTER_R_TEMPFAIL 't'   /* 4xx with the MTA's default text */
#define CP_MILTER_R_REPLYCODE 'y'  /* our own 4xx/5xx reply text */

/* Address families in a 'C' packet (SMFIA_*). */
#define CP_MILTER_FAM_INET '4'
#define CP_MILTER_FAM_INET6 '6'
#define CP_MILTER_FAM_UNIX 'L'
#define CP_MILTER_FAM_UNKNOWN 'U' /* no port, no address follow */

/*
 * Protocol flags (SMFIP_*): in the MTA's OPTNEG, the steps it is able to
 * leave out; in ours, the steps we want left out. NO* = do not send that
 * command; NR_* = the filter will not reply to that command.
 */
#define CP_MILTER_P_NOCONNECT 0x1u
#define CP_MILTER_P_NOHELO 0x2u
#define CP_MILTER_P_NOMAIL 0x4u
#define CP_MILTER_P_NORCPT 0x8u
#define CP_MILTER_P_NOBODY 0x10u
#define CP_MILTER_P_NOHDRS 0x20u
#define CP_MILTER_P_NOEOH 0x40u
#define CP_MILTER_P_NR_HDR 0x80u
#define CP_MILTER_P_NOUNKNOWN 0x100u
#define CP_MILTER_P_NODATA 0x200u
#define CP_MILTER_P_SKIP 0x400u     /* MTA understands SMFIR_SKIP */
#define CP_MILTER_P_RCPT_REJ 0x800u /* also send rejected recipients */
#define CP_MILTER_P_NR_CONN 0x1000u
#define CP_MILTER_P_NR_HELO 0x2000u
#define CP_MILTER_P_NR_MAIL 0x4000u
#define CP_MILTER_P_NR_RCPT 0x8000u
#define CP_MILTER_P_NR_DATA 0x10000u
#define CP_MILTER_P_NR_UNKN 0x20000u
#define CP_MILTER_P_NR_EOH 0x40000u
#define CP_MILTER_P_NR_BODY 0x80000u
#define CP_MILTER_P_HDR_LEADSPC 0x100000u /* header values keep leading SP */

/* Actions (SMFIF_*): modifications the filter may make at end of body. */
#define CP_MILTER_A_ADDHDRS 0x1u
#define CP_MILTER_A_CHGBODY 0x2u
#define CP_MILTER_A_ADDRCPT 0x4u
#define CP_MILTER_A_DELRCPT 0x8u
#define CP_MILTER_A_CHGHDRS 0x10u
#define CP_MILTER_A_QUARANTINE 0x20u
#define CP_MILTER_A_CHGFROM 0x40u
#define CP_MILTER_A_ADDRCPT_PAR 0x80u
#define CP_MILTER_A_SETSYMLIST 0x100u

/* One framed packet. data is borrowed from the caller's buffer; len is the
 * number of data bytes, without the command byte. */
struct cp_milter_pkt {
    char cmd;
    const unsigned char *data;
    uint32_t len;
};

/*
 * Frame one packet from buf[0..n). `max` is the caller's limit on a
 * packet's data bytes (the length field minus the command byte; at most
 * CP_MILTER_MAX). Returns the bytes it spans (> 0) and fills *p; 0 if more
 * bytes are needed (*p untouched); -1 if the length field is 0;
 * CP_MILTER_TOO_LONG if the data would be larger than max. The length is
 * checked as soon as its 4 bytes are present, so the caller never needs
 * to buffer more than CP_MILTER_HDR + max bytes. After an error the stream
 * is out of sync: close it.
 */
#define CP_MILTER_TOO_LONG (-2)
int cp_milter_frame(const unsigned char *buf, size_t n, uint32_t max,
                    struct cp_milter_pkt *p);

/*
 * 'O' from the MTA: its version, offered actions and offered protocol flags.
 * Returns 0, or -1 if the packet is shorter than 12 bytes. Bytes after the
 * 12 are ignored (as libmilter does).
 */
int cp_milter_optneg(const struct cp_milter_pkt *p, uint32_t *version,
                     uint32_t *actions, uint32_t *protocol);

/*
 * 'D': the command the macros are for (*stage, e.g. 'C', 'M', 'E'), then
 * NUL-terminated name, value pairs. The whole packet is checked first; only
 * if it is well formed is fn(arg, name, nlen, value, vlen) called once per
 * pair, in order (fn may be NULL to just count). Names come as sent ("i",
 * "{auth_authen}"); see cp_milter_macro_is(). name[nlen] and value[vlen] are
 * the NUL terminators inside the packet. Returns the number of pairs (0 is
 * valid: Postfix sends a bare stage when no macro has a value), or -1 if the
 * packet is empty, a string lacks its NUL, or the strings do not pair up.
 */
int cp_milter_macros(const struct cp_milter_pkt *p, char *stage,
                     void (*fn)(void *arg, const char *name, size_t nlen,
                                const char *value, size_t vlen),
                     void *arg);

/*
 * True if the macro name as sent (name[0..nlen)) is `key`, with or without
 * braces: "x" and "{x}" both match key "x" (or key "{x}").
 */
bool cp_milter_macro_is(const char *name, size_t nlen, const char *key);

/*
 * 'C': host name NUL, family ('4', '6', 'L' or 'U'), then unless 'U' a
 * 16-bit port in network order and the address (or socket path) NUL. The
 * packet must hold exactly that. *port is in host order (0 for 'U'); for 'U'
 * *addr is the empty string (a static, not in the packet). Returns 0, or -1
 * if malformed (missing NUL, unknown family, truncated, trailing bytes).
 */
int cp_milter_connect(const struct cp_milter_pkt *p, struct str *host,
                      char *family, uint16_t *port, struct str *addr);

/*
 * 'H', 'M', 'R' (and 'U'): a sequence of NUL-terminated strings filling the
 * packet. *s is the first: the HELO name, or the envelope address with its
 * <>. Returns the number of further strings (ESMTP arguments; 0 for HELO),
 * or -1 if the packet is empty or its last string lacks a NUL.
 */
int cp_milter_first_arg(const struct cp_milter_pkt *p, struct str *s);

/*
 * 'L': header name NUL, value NUL, nothing else. Multi-line values keep
 * their line breaks; the leading space is stripped unless HDR_LEADSPC was
 * negotiated. Returns 0, or -1 if malformed or the name is empty.
 */
int cp_milter_header(const struct cp_milter_pkt *p, struct str *name,
                     struct str *value);

/*
 * Readable name of a command byte for logs ("SMFIC_CONNECT", ...), or
 * "(unknown command)". Never NULL; static storage.
 */
const char *cp_milter_cmd_name(char cmd);

/*
 * Encoders. Each writes one complete packet into out[0..cap) and returns
 * the bytes written, or -1 (nothing useful written) if cap is too small or
 * the arguments are refused. None writes past cap.
 */

/* Our 'O' reply: always CP_MILTER_OPTNEG_PKT bytes. */
int cp_milter_put_optneg(unsigned char *out, size_t cap, uint32_t version,
                         uint32_t actions, uint32_t protocol);

/*
 * A reply without data: one of 'a' 'c' 'd' 'p' 'r' 's' 't' (CP_MILTER_R_*
 * except 'y'); any other byte is refused.
 */
int cp_milter_put(unsigned char *out, size_t cap, char reply);

/*
 * SMFIR_REPLYCODE 'y': "CODE X.Y.Z text" NUL-terminated. code3 must be
 * three digits starting with 4 or 5; dsn must be an enhanced status code
 * class.subject.detail (RFC 3463) whose class equals code3's first digit
 * (Postfix refuses the reply otherwise). text[0..tlen) is untrusted: CR, LF,
 * NUL and other controls except TAB become spaces, each '%' is doubled
 * (Sendmail formats the reply with it), and it is cut, never inside a "%%"
 * or a UTF-8 sequence, so that the reply line plus CRLF fits
 * CP_MILTER_REPLY_MAX. text may be NULL if tlen is 0; with no text the
 * reply is "CODE X.Y.Z". A buffer of CP_MILTER_REPLY_PKT_MAX always fits.
 */
int cp_milter_put_reply(unsigned char *out, size_t cap, const char *code3,
                        const char *dsn, const char *text, size_t tlen);

/*
 * SMFIR_QUARANTINE 'q': a modification action, valid only between 'E' and
 * the final reply, and only if the MTA offered (and we asked for) the
 * QUARANTINE action; Postfix moves the message to its hold queue and still
 * waits for the final reply. reason[0..rlen) is sanitised like reply text
 * (no '%' doubling) and cut at CP_MILTER_REASON_MAX bytes; an empty one
 * becomes "quarantined". A buffer of CP_MILTER_QUARANTINE_PKT_MAX always
 * fits.
 */
int cp_milter_put_quarantine(unsigned char *out, size_t cap, const char *reason,
                             size_t rlen);

/*
 * Protocol notes for the state machine (read from Postfix milter8.c and
 * the libmilter documentation):
 *  - 'O' needs our 'O'. Reply version <= the MTA's, actions a subset of its
 *    offer (Postfix drops the filter otherwise), protocol flags masked by
 *    its offer.
 *  - 'D', 'A', 'Q', 'K' never get a reply. 'C' 'H' 'M' 'R' 'T' 'U' 'L' 'N'
 *    'B' get exactly one unless the matching NR_* flag was negotiated; any
 *    number of 'p' may precede it. 'E' gets modifications (for us at most a
 *    'q') and then one final reply; 'c' there means accept.
 *  - 's' only after 'B', and only if the MTA offered SKIP.
 *  - Postfix sends 'D' before a command even when NO* suppresses the
 *    command itself, opens one milter connection per SMTP session, never
 *    sends 'K', and closes without 'Q' after a final reply to 'C' or 'H'.
 */

#endif
