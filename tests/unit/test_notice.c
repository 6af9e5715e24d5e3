/* test_notice.c — customer mail, ARF report and webhook JSON for an
 * incident: structure, header safety against hostile fields, templates. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/notice.h"
#include "util/strbuf.h"

#define AT_MS 1795452001123LL /* Mon, 23 Nov 2026 16:40:01.123 UTC */

static struct cp_incident
incident(void)
{
    struct cp_incident in = {
        .id = 42,
        .account = "u:alice@example.net",
        .customer = "C1001",
        .contact = "alice@example.net",
        .state = "BLOCKED",
        .prev_state = "WATCH",
        .at_ms = AT_MS,
        .score = 12.3,
        .evidence = "score 12.3: forged_sender +8.0 (8x), new_recipient "
                    "+3.1 (31x)",
        .reason = "automatic",
        .actor = "auto",
        .client_addr = "192.0.2.7",
        .helo = "alice-pc",
        .sample_sender = "alice@example.net",
        .sample_recipient = "bob@example.org",
        .help_url = "https://isp.example/unblock",
        .reporting_mta = "smtp.isp.example",
        .signals = {CP_SIG_FORGED_SENDER, CP_SIG_NEW_RECIPIENT},
        .nsignals = 2,
    };
    return in;
}

/* ---- checks on rendered messages ----------------------------------- */

static size_t
header_len(const char *m)
{
    const char *e = strstr(m, "\n\n");

    assert_non_null(e);
    return (size_t)(e - m) + 1;
}

static size_t
count(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* Lines of the header block at m starting with `name` (case-insensitive). */
static size_t
count_field(const char *m, const char *name)
{
    size_t hl = header_len(m), n = 0, nl = strlen(name);

    for (size_t i = 0; i < hl; i = (size_t)(strchr(m + i, '\n') - m) + 1)
        if (strncasecmp(m + i, name, nl) == 0)
            n++;
    return n;
}

/* The whole message: no CR or NUL, no line over 998 octets, no line that
 * starts a Bcc header; the top-level headers are ASCII "Name: value" or
 * continuation lines. */
static void
assert_safe_message(const struct strbuf *sb)
{
    const char *m = sb->data;
    size_t hl = header_len(m), col = 0;

    assert_int_equal(strlen(m), sb->len);
    assert_null(strchr(m, '\r'));
    for (size_t i = 0; i < sb->len; i++) {
        if (m[i] == '\n') {
            col = 0;
            continue;
        }
        if (col == 0)
            assert_true(strncasecmp(m + i, "Bcc:", 4) != 0);
        assert_true(++col <= 998);
        if (i < hl)
            assert_true((unsigned char)m[i] >= 0x20 &&
                        (unsigned char)m[i] < 0x7f);
    }
    for (size_t i = 0; i < hl; i = (size_t)(strchr(m + i, '\n') - m) + 1) {
        if (m[i] == ' ')
            continue; /* folded */
        size_t n = strspn(m + i, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "abcdefghijklmnopqrstuvwxyz0123456789-");
        assert_true(n > 0);
        assert_int_equal(m[i + n], ':');
    }
    assert_int_equal(count_field(m, "Subject:"), 1);
    assert_int_equal(count_field(m, "To:"), 1);
    assert_int_equal(count_field(m, "From:"), 1);
}

/* ---- a small JSON validator ---------------------------------------- */

static const char *json_value(const char *p);

static const char *
json_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static const char *
json_string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p != '"') {
        if (*p == '\0' || (unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i])
                        return NULL;
                p += 5;
            } else if (*p != '\0' && strchr("\"\\/bfnrt", *p)) {
                p++;
            } else {
                return NULL;
            }
        } else {
            p++;
        }
    }
    return p + 1;
}

static const char *
json_number(const char *p)
{
    const char *d;

    if (*p == '-')
        p++;
    d = p;
    p += strspn(p, "0123456789");
    if (p == d)
        return NULL;
    if (*p == '.') {
        d = ++p;
        p += strspn(p, "0123456789");
        if (p == d)
            return NULL;
    }
    return p;
}

/* An object ('{': "name": value, ...) or an array ('[': value, ...). */
static const char *
json_members(const char *p)
{
    char close = *p == '{' ? '}' : ']';

    p = json_ws(p + 1);
    if (*p == close)
        return p + 1;
    for (;;) {
        if (close == '}') {
            if ((p = json_string(json_ws(p))) == NULL)
                return NULL;
            p = json_ws(p);
            if (*p++ != ':')
                return NULL;
        }
        if ((p = json_value(p)) == NULL)
            return NULL;
        p = json_ws(p);
        if (*p == close)
            return p + 1;
        if (*p++ != ',')
            return NULL;
    }
}

static const char *
json_value(const char *p)
{
    p = json_ws(p);
    if (*p == '{' || *p == '[')
        return json_members(p);
    if (*p == '"')
        return json_string(p);
    if (strncmp(p, "null", 4) == 0 || strncmp(p, "true", 4) == 0)
        return p + 4;
    if (strncmp(p, "false", 5) == 0)
        return p + 5;
    return json_number(p);
}

static void
assert_json(const struct strbuf *sb)
{
    const char *end;

    assert_int_equal(strlen(sb->data), sb->len);
    assert_int_equal(utf8_check(sb->data, sb->len), sb->len);
    end = json_value(sb->data);
    assert_non_null(end);
    assert_string_equal(json_ws(end), "");
}

/* ---- ARF ------------------------------------------------------------ */

/* The boundary parameter of the top-level Content-Type. */
static void
boundary_of(const char *m, char *b, size_t n)
{
    const char *p = strstr(m, "boundary=\""), *e;

    assert_non_null(p);
    assert_true(p < m + header_len(m));
    p += 10;
    e = strchr(p, '"');
    assert_non_null(e);
    assert_true((size_t)(e - p) < n && e > p && e - p <= 70);
    memcpy(b, p, (size_t)(e - p));
    b[e - p] = '\0';
}

/* Check the three parts and return pointers to their starts in parts[]. */
/* The built-in customer mail of `in`, rendered into `sb` (emptied first)
 * and checked for safety: its body. */
static const char *
builtin_body(const struct cp_incident *in, struct strbuf *sb)
{
    char err[CP_ERR_MAX];

    sb_reset(sb);
    assert_int_equal(
        cp_notice_customer(in, "abuse@isp.example", NULL, sb, err), 0);
    assert_safe_message(sb);
    return strstr(sb->data, "\n\n") + 2;
}

static void
assert_arf_shape(const char *m, const char *parts[3])
{
    char b[80], delim[90], close[90];
    const char *p;

    boundary_of(m, b, sizeof(b));
    snprintf(delim, sizeof(delim), "\n--%s\n", b);
    snprintf(close, sizeof(close), "\n--%s--\n", b);
    /* the boundary: once in the header, three delimiters, one close */
    assert_int_equal(count(m, b), 5);
    assert_int_equal(count(m, delim), 3);
    assert_int_equal(count(m, close), 1);
    assert_string_equal(strstr(m, close), close); /* at the very end */
    p = m;
    for (int i = 0; i < 3; i++) {
        p = strstr(p, delim);
        assert_non_null(p);
        p += strlen(delim);
        parts[i] = p;
    }
    assert_true(strncmp(parts[0], "Content-Type: text/plain; charset=utf-8\n",
                        40) == 0);
    assert_true(strncmp(parts[1], "Content-Type: message/feedback-report\n\n",
                        39) == 0);
    assert_true(
        strncmp(parts[2], "Content-Type: text/rfc822-headers\n\n", 35) == 0);
}

static void
test_arf_parts(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX];
    const char *parts[3];
    const char *m;

    (void)state;
    sb_init(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    m = sb.data;
    assert_safe_message(&sb);
    assert_non_null(strstr(m, "From: abuse@isp.example\n"));
    assert_non_null(strstr(m, "To: fbl@isp.example\n"));
    assert_non_null(strstr(m, "Date: Mon, 23 Nov 2026 16:40:01 +0000\n"));
    assert_non_null(strstr(
        m, "Message-ID: <chokepoint.42.1795452001123.arf@smtp.isp.example>\n"));
    assert_non_null(strstr(m, "MIME-Version: 1.0\n"));
    assert_non_null(strstr(m, "Auto-Submitted: auto-generated\n"));
    assert_non_null(strstr(m, "Content-Type: multipart/report; "
                              "report-type=feedback-report;\n boundary=\""));
    assert_arf_shape(m, parts);

    /* part 1: human, and it says bodies are never seen */
    assert_non_null(strstr(parts[0], "never sees message bodies"));
    assert_non_null(strstr(parts[0], "u:alice@example.net"));
    /* part 2: the required fields first, then the optional ones */
    assert_true(strncmp(parts[1] + 39,
                        "Feedback-Type: abuse\n"
                        "User-Agent: chokepoint/",
                        43) == 0);
    assert_non_null(strstr(parts[1], "\nVersion: 1\n"));
    assert_non_null(
        strstr(parts[1], "\nOriginal-Mail-From: <alice@example.net>\n"));
    assert_non_null(
        strstr(parts[1], "\nOriginal-Rcpt-To: <bob@example.org>\n"));
    assert_non_null(
        strstr(parts[1], "\nArrival-Date: Mon, 23 Nov 2026 16:40:01 +0000\n"));
    assert_non_null(
        strstr(parts[1], "\nReporting-MTA: dns; smtp.isp.example\n"));
    assert_non_null(strstr(parts[1], "\nSource-IP: 192.0.2.7\n"));
    assert_non_null(strstr(parts[1], "\nReported-Domain: example.net\n"));
    assert_true(strstr(parts[1], "\nVersion: 1\n") < parts[2]);
    assert_non_null(strstr(parts[0], "Decided by:     auto\n"));
    assert_non_null(strstr(parts[0], "only the envelope of the last message"));
    /* part 3: the envelope as headers */
    assert_non_null(strstr(parts[2], "Return-Path: <alice@example.net>\n"));
    assert_non_null(strstr(parts[2], "reconstructed from the SMTP envelope"));
    assert_non_null(strstr(parts[2], "Received: from alice-pc ([192.0.2.7]) "
                                     "by smtp.isp.example"));
    assert_non_null(strstr(parts[2], "X-Envelope-To: <bob@example.org>\n"));

    /* unknown envelope: the optional fields are left out */
    in.sample_sender = in.sample_recipient = in.client_addr = in.helo = NULL;
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    assert_arf_shape(sb.data, parts);
    assert_null(strstr(sb.data, "Original-Mail-From"));
    assert_null(strstr(sb.data, "Source-IP"));
    assert_null(strstr(sb.data, "Received:"));
    /* ... and nothing claims to be reconstructed from an envelope: the
     * third part (required, RFC 5965 2) says there was none */
    assert_null(strstr(sb.data, "reconstructed from the SMTP envelope"));
    assert_null(strstr(parts[0], "only the envelope of the last message"));
    assert_non_null(strstr(parts[0], "no SMTP envelope was seen for\nthis "
                                     "decision"));
    assert_non_null(strstr(parts[2], "X-Chokepoint-Note: no SMTP envelope was "
                                     "seen for this decision"));
    assert_non_null(strstr(parts[2], "X-Chokepoint-Incident: 42\n"));
    /* a client address that is not an IP address is no Source-IP */
    in.client_addr = "not-an-ip";
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    assert_null(strstr(sb.data, "Source-IP"));
    sb_fini(&sb);
}

static void
test_arf_boundary(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX], b[80];
    const char *parts[3];

    (void)state;
    /* fields that hold the boundary the ARF would pick first */
    in.account = "u:=_chokepoint_42_1795452001123_0";
    in.reason = "--=_chokepoint_42_1795452001123_1--";
    in.sample_sender = "=_chokepoint_42_1795452001123_2@x.example";
    sb_init(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    boundary_of(sb.data, b, sizeof(b));
    assert_string_equal(b, "=_chokepoint_42_1795452001123_3");
    assert_arf_shape(sb.data, parts);
    assert_safe_message(&sb);
    sb_fini(&sb);
}

static void
test_arf_errors(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX];

    (void)state;
    sb_init(&sb);
    sb_puts(&sb, "keep");
    assert_int_equal(cp_notice_arf(&in, "abuse@isp.example",
                                   "fbl@isp.example\nBcc: x@y", &sb, err),
                     -1);
    assert_non_null(strstr(err, "to address"));
    in.reporting_mta = "smtp.isp.example>\nBcc: x@y";
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        -1);
    in = incident();
    in.account = NULL;
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        -1);
    assert_string_equal(sb.data, "keep");
    sb_fini(&sb);
}

/* ---- header injection ------------------------------------------------ */

static void
test_injection(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX];
    const char *parts[3];

    (void)state;
    in.account = "u:alice\r\nBcc: x@y";
    in.reason = "INTERNAL\r\nBcc: n@n";
    in.message = "spam\r\n\r\nBcc: z@w\nSubject: free money";
    in.logins = (const char *const[]){"alice\r\nBcc: l@l", "bob\u202e"};
    in.nlogins = 2;
    in.customer = "C1\nBcc: c@c";
    in.evidence = "e\rBcc: e@e";
    in.helo = "pc\nBcc: h@h";
    in.client_addr = "192.0.2.7\nBcc: i@i";
    in.sample_sender = "a@b\r\nBcc: s@s";
    in.sample_recipient = "r@r\nBcc: r@r";
    in.help_url = "https://x/\nBcc: u@u";
    in.state = "BLOCKED\nBcc: st@st";
    sb_init(&sb);

    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", NULL, &sb, err), 0);
    assert_safe_message(&sb);
    /* the hostile account ends up as one header line, spaces for CR LF */
    assert_non_null(
        strstr(sb.data, "X-Chokepoint-Account: u:alice Bcc: x@y\n"));
    /* the logins in the body, each on the line, the bidi override gone */
    assert_non_null(strstr(sb.data, "alice  Bcc: l@l, bob ."));
    assert_null(strstr(sb.data, "INTERNAL")); /* the note stays inside */

    sb_reset(&sb);
    assert_int_equal(cp_notice_customer(&in, "abuse@isp.example",
                                        "Subject: {{account}} {{reason}}\n\n"
                                        "{{account}}\n{{reason}}\n{{customer}}"
                                        "\n{{state}}\n{{evidence}}\n"
                                        "{{message}}\n{{logins}}\n",
                                        &sb, err),
                     0);
    assert_safe_message(&sb);
    assert_non_null(
        strstr(sb.data, "Subject: alice Bcc: l@l, bob spam Bcc: z@w "
                        "Subject: free money\n"));
    assert_null(strstr(sb.data, "INTERNAL"));

    sb_reset(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    assert_safe_message(&sb);
    assert_arf_shape(sb.data, parts);
    /* the feedback report keeps one field per line */
    assert_non_null(strstr(parts[1], "\nOriginal-Mail-From: <a@b Bcc: s@s>\n"));
    assert_null(strstr(parts[1], "Source-IP")); /* not an IP address */

    /* the contact address is never rewritten: unsafe is an error */
    in.contact = "alice@example.net\r\nBcc: x@y";
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", NULL, &sb, err), -1);
    assert_int_equal(sb.len, 0);
    assert_non_null(strstr(err, "contact address"));
    sb_fini(&sb);
}

/* Non-ASCII becomes '?' in headers, stays UTF-8 in the body; bytes that
 * are not UTF-8 and bidi overrides never reach the output. */
static void
test_non_ascii(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX];

    (void)state;
    in.account = "u:j\xc3\xb6rg\xe2\x80\xae@example.net\xff";
    sb_init(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    assert_safe_message(&sb);
    assert_non_null(
        strstr(sb.data, "X-Chokepoint-Account: u:j?rg @example.net?\n"));
    assert_non_null(strstr(sb.data, "u:j\xc3\xb6rg @example.net?\n"));
    assert_int_equal(utf8_check(sb.data, sb.len), sb.len);

    /* the customer Subject is RFC 2047 encoded when it is not ASCII */
    sb_reset(&sb);
    in.account = "u:alice@example.net";
    assert_int_equal(cp_notice_customer(&in, "abuse@isp.example",
                                        "Subject: Compte {{account}} "
                                        "bloqu\xc3\xa9\n\nBonjour\n",
                                        &sb, err),
                     0);
    assert_safe_message(&sb);
    assert_non_null(strstr(sb.data, "Subject: =?utf-8?B?Q29tcHRlIGFsaWNlQGV4Y"
                                    "W1wbGUubmV0IGJsb3F1w6k=?=\n"));
    sb_fini(&sb);
}

/* ---- customer templates --------------------------------------------- */

static void
test_template(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX];
    const char *body;
    static const char tmpl[] =
        "Subject: Sperre {{ account }} ({{incident}})\r\n\r\n"
        "Konto {{account}} ({{customer}}) ist {{state}} seit {{time}}.\r\n"
        "Gesehen: {{evidence}} von {{client}}; Grund: {{reason}}\r\n"
        "Hilfe: {{help_url}} {single} }} {{incident}}\r\n";

    (void)state;
    assert_int_equal(cp_notice_template_check(tmpl, strlen(tmpl), err), 0);
    sb_init(&sb);
    assert_int_equal(cp_notice_customer(&in, "Abuse Desk <abuse@isp.example>",
                                        tmpl, &sb, err),
                     0);
    assert_safe_message(&sb);
    assert_non_null(
        strstr(sb.data, "Subject: Sperre alice@example.net (42)\n"));
    assert_non_null(strstr(sb.data, "From: Abuse Desk <abuse@isp.example>\n"));
    assert_non_null(strstr(sb.data, "To: alice@example.net\n"));
    assert_non_null(strstr(
        sb.data,
        "Message-ID: <chokepoint.42.1795452001123.customer@smtp.isp.example>"));
    assert_non_null(strstr(sb.data, "Content-Type: text/plain; charset=utf-8\n"
                                    "Content-Transfer-Encoding: 8bit\n\n"));
    body = strstr(sb.data, "\n\n") + 2;
    assert_string_equal(
        body, "Konto alice@example.net (C1001) ist BLOCKED seit 2026-11-23 "
              "17:40 CET.\n"
              "Gesehen: mail sent in the name of sender addresses "
              "this account had never used; many messages to addresses this "
              "account had never written to before von 192.0.2.7; Grund: \n"
              "Hilfe: https://isp.example/unblock {single} }} 42\n");

    /* a byte order mark does not hide the Subject line */
    sb_reset(&sb);
    assert_int_equal(cp_notice_customer(&in, "abuse@isp.example",
                                        "\xef\xbb\xbfSubject: S\n\nB", &sb,
                                        err),
                     0);
    assert_non_null(strstr(sb.data, "\nSubject: S\n"));
    assert_non_null(strstr(sb.data, "\n\nB\n"));

    /* no Subject line: the default; NULL fields render as "" */
    in.customer = NULL;
    sb_reset(&sb);
    assert_int_equal(cp_notice_customer(&in, "abuse@isp.example",
                                        "[{{customer}}]", &sb, err),
                     0);
    assert_non_null(strstr(sb.data, "Subject: Outgoing mail from "
                                    "alice@example.net has been blocked "
                                    "(incident 42)\n"));
    assert_non_null(strstr(sb.data, "\n\n[]\n"));
    sb_fini(&sb);
}

static void
assert_bad_template(const char *t, size_t len, const char *want)
{
    char err[CP_ERR_MAX];

    err[0] = '\0';
    assert_int_equal(cp_notice_template_check(t, len, err), -1);
    if (strstr(err, want) == NULL)
        fail_msg("template error \"%s\", want \"%s\"", err, want);
}

static void
test_template_errors(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX];

    (void)state;
    assert_bad_template("Hello {{acount}}", 16,
                        "unknown placeholder {{acount}} at offset 6");
    assert_bad_template("{{}}", 4, "unknown placeholder {{}} at offset 0");
    assert_bad_template("Hi {{account", 12,
                        "unterminated placeholder at offset 3");
    assert_bad_template("a\rb", 3, "control character 0x0d at offset 1");
    assert_bad_template("a\0b", 3, "control character 0x00 at offset 1");
    assert_bad_template("ab\xc3(", 4, "not UTF-8 at offset 2");
    assert_bad_template("", 0, "empty");
    assert_bad_template("{{x\n}}\xff", 7, "not UTF-8");
    /* a hostile name is escaped in the message */
    assert_bad_template("{{a\tb}}", 7, "unknown placeholder {{a\\x09b}}");
    /* does not read past len */
    assert_int_equal(cp_notice_template_check("{{account}}xyz", 11, err), 0);

    sb_init(&sb);
    sb_puts(&sb, "keep");
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", "Dear {{name}}", &sb, err),
        -1);
    assert_string_equal(err, "unknown placeholder {{name}} at offset 5");
    assert_string_equal(sb.data, "keep");
    in.contact = NULL;
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", NULL, &sb, err), -1);
    assert_string_equal(err, "no contact address");
    in = incident();
    assert_int_equal(cp_notice_customer(&in, "abuse", NULL, &sb, err), -1);
    assert_string_equal(err, "from address has no '@'");
    assert_string_equal(sb.data, "keep");
    sb_fini(&sb);
}

static void
test_builtin(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX];
    const char *body;

    (void)state;
    sb_init(&sb);
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", NULL, &sb, err), 0);
    assert_safe_message(&sb);
    body = strstr(sb.data, "\n\n") + 2;
    assert_non_null(strstr(sb.data, "Subject: Outgoing mail from "
                                    "alice@example.net has been blocked"));
    assert_non_null(strstr(sb.data, "Auto-Submitted: auto-generated\n"));
    assert_non_null(strstr(sb.data, "Date: Mon, 23 Nov 2026 16:40:01 +0000\n"));
    assert_non_null(strstr(sb.data, "X-Chokepoint-Incident: 42\n"));
    assert_non_null(strstr(sb.data, "X-Chokepoint-Account: "
                                    "u:alice@example.net\n"));
    assert_null(strstr(body, "{{"));
    assert_non_null(strstr(body, "account alice@example.net"));
    assert_non_null(strstr(body, "On 2026-11-23 17:40 CET we blocked"));
    /* plain words, one line per kind of signal, no scores */
    assert_non_null(strstr(body, "showed:\n- mail sent in the name of "
                                 "sender addresses this account had never "
                                 "used\n- many messages to addresses this "
                                 "account had never written to before\n"));
    assert_null(strstr(body, "From addresses"));
    /* a sentence starts with a capital letter */
    assert_ptr_equal(strstr(body, "Hello,\n\nThis is an automatic message"),
                     body);
    assert_null(strstr(body, "forged_sender"));
    assert_null(strstr(body, "12.3"));
    /* the address of the request that tipped the block: later mail may
     * come from others, so it is not "the last" */
    assert_non_null(strstr(body, "Some of this mail came from the internet "
                                 "address 192.0.2.7.\n"));
    assert_null(strstr(body, "The last of this mail"));
    assert_null(strstr(body, "abuse desk:")); /* reason was "automatic" */
    assert_non_null(strstr(body, "malware"));
    assert_non_null(strstr(body, "password"));
    assert_non_null(strstr(body, "From a device you know is clean"));
    assert_non_null(strstr(body, "outgoing (SMTP) server"));
    assert_non_null(strstr(body, "https://isp.example/unblock"));
    assert_non_null(strstr(body, "incident number 42"));
    assert_non_null(strstr(body, "stays\nblocked"));

    /* throttled, a reason from the desk, no help URL */
    in.state = "THROTTLED";
    in.reason = "reported by recipients";
    in.help_url = "";
    body = builtin_body(&in, &sb);
    assert_non_null(strstr(sb.data, "is being limited"));
    assert_non_null(strstr(body, "we started to limit"));
    /* the desk's note is internal: only --tell text reaches the customer */
    assert_null(strstr(body, "reported by recipients"));
    assert_null(strstr(body, "abuse desk adds"));
    in.message = "Call us on 0800 123.";
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", NULL, &sb, err), 0);
    body = strstr(sb.data, "\n\n") + 2;
    assert_non_null(strstr(body, "Our abuse desk adds: Call us on 0800 123.\n"));
    assert_null(strstr(body, "reported by recipients"));
    /* no help URL: the way to reach the desk is a reply (From: is
     * notify.from, the desk's mailbox) */
    assert_null(strstr(body, "customer support"));
    assert_non_null(strstr(body, "reply to this message to have the\nlimit "
                                 "lifted"));
    assert_non_null(strstr(body, "stays limited"));

    /* held by the desk with nothing seen (a contract ended): no word of
     * spam, malware or a stolen password; with evidence, the usual advice */
    in.state = "MANUAL_HOLD";
    in.nsignals = 0;
    in.client_addr = NULL;
    in.message = "Your contract ended on 30 November.";
    body = builtin_body(&in, &sb);
    assert_non_null(strstr(sb.data, "is on hold"));
    assert_non_null(strstr(body, "our abuse desk stopped all mail"));
    assert_non_null(strstr(body, "Our abuse desk adds: Your contract ended "
                                 "on 30 November.\n"));
    assert_non_null(strstr(body, "incident number 42"));
    assert_non_null(strstr(body, "have the hold lifted, reply to this "
                                 "message."));
    assert_null(strstr(body, "customer support"));
    assert_null(strstr(body, "spam"));
    assert_null(strstr(body, "malware"));
    assert_null(strstr(body, "password"));
    in.nsignals = 1;
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", NULL, &sb, err), 0);
    body = strstr(sb.data, "\n\n") + 2;
    assert_non_null(strstr(body, "looks like spam"));
    assert_non_null(strstr(body, "malware"));
    sb_fini(&sb);
}

/* Every line stays within 998 octets however long the fields are. */
static void
test_long_fields(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX], acct[5000], reason[6000];
    const char *parts[3];

    (void)state;
    memset(acct, 'a', sizeof(acct) - 1);
    acct[sizeof(acct) - 1] = '\0';
    for (size_t i = 0; i < sizeof(reason) - 1; i++)
        reason[i] = i % 7 == 6 ? ' ' : "\xc3\xa9x"[i % 3];
    reason[sizeof(reason) - 1] = '\0';
    in.account = acct;
    in.reason = reason;
    in.evidence = reason;
    sb_init(&sb);
    assert_int_equal(cp_notice_customer(&in, "abuse@isp.example",
                                        "Subject: {{reason}}\n\n"
                                        "{{account}}{{reason}}{{evidence}}",
                                        &sb, err),
                     0);
    assert_safe_message(&sb);
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    assert_safe_message(&sb);
    assert_arf_shape(sb.data, parts);
    sb_reset(&sb);
    cp_notice_webhook(&in, &sb);
    assert_json(&sb);
    /* three fields cut at NOTICE_MAX_VALUE bytes, each at worst escaped
     * as \u00XX */
    assert_true(sb.len < 3 * 6 * (NOTICE_MAX_VALUE + 3) + 400);
    assert_non_null(strstr(sb.data, "aaa...\""));
    sb_fini(&sb);
}

/* ---- webhook -------------------------------------------------------- */

static void
test_webhook(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;

    (void)state;
    sb_init(&sb);
    cp_notice_webhook(&in, &sb);
    assert_string_equal(
        sb.data,
        "{\"schema\":\"chokepoint.webhook/1\",\"event\":\"incident\","
        "\"incident\":42,\"change\":42,"
        "\"account\":\"u:alice@example.net\",\"customer\":\"C1001\","
        "\"state\":\"BLOCKED\",\"previous_state\":\"WATCH\","
        "\"time\":\"2026-11-23T16:40:01.123Z\",\"score\":12.3,"
        "\"evidence\":\"score 12.3: forged_sender +8.0 (8x), new_recipient "
        "+3.1 (31x)\",\"reason\":\"automatic\",\"actor\":\"auto\","
        "\"message\":null,"
        "\"logins\":[\"alice@example.net\"],"
        "\"signals\":[\"forged_sender\",\"new_recipient\"],"
        "\"client\":\"192.0.2.7\","
        "\"help_url\":\"https://isp.example/unblock\"}");
    assert_json(&sb);

    /* a release: "incident" is the block's it ends, "change" its own;
     * the actor is the person who decided */
    in.released = true;
    in.change = 50;
    in.actor = "jane.doe (uid 0)";
    sb_reset(&sb);
    cp_notice_webhook(&in, &sb);
    assert_json(&sb);
    assert_non_null(strstr(sb.data, "\"event\":\"released\",\"incident\":42,"
                                    "\"change\":50,"));
    assert_non_null(strstr(sb.data, "\"actor\":\"jane.doe (uid 0)\","));
    in = incident();

    /* NULLs as null, hostile text escaped */
    in.customer = in.prev_state = in.client_addr = in.help_url = NULL;
    in.actor = NULL;
    in.account = "u:\"alice\"\\\r\nBcc: x@y\x01\x7f\xff";
    in.reason = "say \"hi\"\t</script>";
    in.score = NAN;
    sb_reset(&sb);
    cp_notice_webhook(&in, &sb);
    assert_json(&sb);
    assert_non_null(strstr(sb.data, "\"customer\":null"));
    assert_non_null(strstr(sb.data, "\"previous_state\":null"));
    assert_non_null(strstr(sb.data, "\"client\":null"));
    assert_non_null(strstr(sb.data, "\"help_url\":null"));
    assert_non_null(strstr(sb.data, "\"actor\":null"));
    assert_non_null(strstr(sb.data, "\"score\":null"));
    assert_non_null(strstr(sb.data, "\"account\":\"u:\\\"alice\\\"\\\\"
                                    "\\u000d\\u000aBcc: x@y\\u0001\\u007f"
                                    "\\u00ff\""));
    sb_fini(&sb);
}

/* ---- who is named, when, and the release ---------------------------- */

static void
test_audiences(void **state)
{
    struct cp_incident in = incident();
    struct strbuf sb;
    char err[CP_ERR_MAX];
    const char *parts[3], *body;

    (void)state;
    /* a zombie forged its sender: the report names the login's domain */
    in.sample_sender = "ceo@victim.example";
    in.logins = (const char *const[]){"alice@example.net", "bob@EXAMPLE.net",
                                      "carol", "dave@shop.example"};
    in.nlogins = 4;
    in.reason = "ticket 4712";
    in.message = "Your PC at home is infected.";
    in.actor = "jane.doe (uid 0)";
    sb_init(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    assert_arf_shape(sb.data, parts);
    assert_non_null(strstr(parts[1], "Original-Mail-From: <ceo@victim"));
    assert_null(strstr(parts[1], "Reported-Domain: victim.example"));
    assert_non_null(strstr(parts[1], "\nReported-Domain: example.net\n"
                                     "Reported-Domain: shop.example\n"));
    assert_int_equal(count(parts[1], "Reported-Domain:"), 2);
    assert_non_null(strstr(parts[1], "\nSource-IP: 192.0.2.7\n"));
    /* the desk's report has the note, the scores and what was said */
    assert_non_null(strstr(parts[0], "Reason:         ticket 4712\n"));
    assert_non_null(strstr(parts[0], "Customer told:  Your PC at home"));
    assert_non_null(strstr(parts[0], "forged_sender +8.0"));
    assert_non_null(strstr(parts[0], "Decided by:     jane.doe (uid 0)\n"));
    /* who decided is the ISP's business, not the customer's */
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", NULL, &sb, err), 0);
    assert_null(strstr(sb.data, "jane.doe"));
    /* an address-only account: no Reported-Domain at all */
    in.logins = NULL;
    in.account = "ip:192.0.2.0/24";
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_arf(&in, "abuse@isp.example", "fbl@isp.example", &sb, err),
        0);
    assert_null(strstr(sb.data, "Reported-Domain"));

    /* the customer: the logins, the message, never the note */
    in = incident();
    in.account = "c:C1001";
    in.logins = (const char *const[]){"alice@example.net", "bob@example.net"};
    in.nlogins = 2;
    in.reason = "ticket 4712";
    sb_reset(&sb);
    assert_int_equal(cp_notice_customer(&in, "abuse@isp.example",
                                        "{{logins}}|{{account}}|{{reason}}|"
                                        "{{message}}|{{seen}}|",
                                        &sb, err),
                     0);
    assert_non_null(strstr(sb.data, "Subject: Outgoing mail from "
                                    "alice@example.net, bob@example.net has"));
    body = strstr(sb.data, "\n\n") + 2;
    assert_string_equal(body, "alice@example.net, bob@example.net|"
                              "alice@example.net, bob@example.net|||"
                              "- mail sent in the name of sender "
                              "addresses this account had never used\n"
                              "- many messages to addresses this account had "
                              "never written to before|\n");
    assert_null(strstr(sb.data, "4712"));

    /* the time is the host's, with its zone named */
    setenv("TZ", "EST5EDT,M3.2.0,M11.1.0", 1);
    tzset();
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", "{{time}}", &sb, err), 0);
    assert_non_null(strstr(sb.data, "\n\n2026-11-23 11:40 EST\n"));
    setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
    tzset();

    /* the release: its own built-in text, subject and webhook event */
    in = incident();
    in.released = true;
    in.state = "PROBATION";
    in.prev_state = "MANUAL_HOLD";
    in.nsignals = 0;
    in.reason = "ticket 4712 closed";
    in.change = 57; /* the release's own number; 42 is the block's */
    sb_reset(&sb);
    assert_int_equal(
        cp_notice_customer(&in, "abuse@isp.example", NULL, &sb, err), 0);
    assert_safe_message(&sb);
    assert_non_null(strstr(sb.data, "Subject: Outgoing mail from "
                                    "alice@example.net can flow again "
                                    "(incident 42)\n"));
    assert_non_null(strstr(sb.data, "X-Chokepoint-Incident: 42\n"));
    assert_non_null(strstr(sb.data, "Message-ID: <chokepoint.42."
                                    "1795452001123.release@"));
    body = strstr(sb.data, "\n\n") + 2;
    assert_non_null(strstr(body, "On 2026-11-23 17:40 CET we lifted the "
                                 "block"));
    assert_ptr_equal(strstr(body, "Hello,\n\nThis is an automatic"), body);
    assert_null(strstr(body, "4712"));
    assert_null(strstr(body, "57"));
    assert_non_null(strstr(body, "incident number 42"));
    assert_null(strstr(body, "malware"));
    /* on probation: watched more closely, blocked again if need be */
    assert_non_null(strstr(body, "watched more closely"));
    assert_non_null(strstr(body, "it will be blocked again"));
    /* allowed: never blocked automatically, so no such threat */
    in.state = "ALLOWED";
    body = builtin_body(&in, &sb);
    assert_null(strstr(body, "watched more closely"));
    assert_null(strstr(body, "blocked again"));
    assert_null(strstr(body, "blocked\nagain"));
    assert_non_null(strstr(body, "no longer\nstopped automatically"));
    in.state = "PROBATION";
    sb_reset(&sb);
    cp_notice_webhook(&in, &sb);
    assert_json(&sb);
    assert_ptr_equal(strstr(sb.data, "{\"schema\":\"chokepoint.webhook/1\","
                                     "\"event\":\"released\","),
                     sb.data);
    assert_non_null(strstr(sb.data, "\"reason\":\"ticket 4712 closed\""));
    assert_non_null(strstr(sb.data, "\"signals\":[]"));
    sb_fini(&sb);
}

int
main(void)
{
    /* {{time}} is local time: a fixed zone for the tests, no tzdata */
    setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
    tzset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arf_parts),
        cmocka_unit_test(test_arf_boundary),
        cmocka_unit_test(test_arf_errors),
        cmocka_unit_test(test_injection),
        cmocka_unit_test(test_non_ascii),
        cmocka_unit_test(test_template),
        cmocka_unit_test(test_template_errors),
        cmocka_unit_test(test_builtin),
        cmocka_unit_test(test_long_fields),
        cmocka_unit_test(test_webhook),
        cmocka_unit_test(test_audiences),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
