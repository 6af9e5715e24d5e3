/*
 * ctl.c — `chokepoint status|show`: the client of chokepointd's admin
 * socket.
 *
 *   chokepoint [-s SOCKET] [--json] status
 *   chokepoint [-s SOCKET] [--json] show|history ACCOUNT
 *   chokepoint [-s SOCKET] [--json] block|release|allow ACCOUNT --note TEXT
 *              [--tell TEXT] [--no-notify] [--by NAME] [--create]
 *   chokepoint [-s SOCKET] [--json] release ACCOUNT --self-service
 * (ACCOUNT: a login, an IP address, or a c:/u:/ip: key)
 *
 * It sends one command line and prints the daemon's reply. Exit status:
 * 0 ok, 1 the daemon reported an error, 2 usage, 3 cannot connect.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/parse.h"
#include "util/strbuf.h"

#define DEFAULT_SOCKET "/run/chokepoint/admin.sock"
#define CLI_MAX_ARG 512
#define CLI_MAX_LINE 1024 /* chokepointd's ADMIN_MAX_LINE, newline included */

static int
ctl_usage(FILE *fp, int rc)
{
    fprintf(fp,
            "usage: chokepoint [-s SOCKET] [--json] COMMAND\n"
            "commands:\n"
            "  help            this text\n"
            "  status          counters, connections, decisions so far\n"
            "  top [N]         accounts by state and evidence score (20)\n"
            "  show ACCOUNT    an account's state, evidence, counters against "
            "its\n"
            "                  limits and recent history; ACCOUNT is a SASL "
            "login,\n"
            "                  an IP address, or a key (c:CUSTOMER, u:LOGIN,\n"
            "                  ip:NETWORK/LEN)\n"
            "  history ACCOUNT the account's state changes, newest first, each\n"
            "                  with its number (the incident number of notices)\n"
            "  incident N      state change N (a notice's incident number)\n"
            "  reload          reload the configuration and the customer map;\n"
            "                  says whether the new one was taken, and why not\n"
            "  block ACCOUNT --note TEXT       hold all its mail (MANUAL_HOLD)\n"
            "  release ACCOUNT --note TEXT     release to PROBATION\n"
            "  release ACCOUNT --self-service  the customer's own release "
            "(limited\n"
            "                                  per period; BLOCKED only)\n"
            "  allow ACCOUNT --note TEXT       vouch for it: no state "
            "actions, limits\n"
            "                                  still apply (release "
            "withdraws it)\n"
            "  sim SCENARIO    simulate an ISP's outbound stream (chokepoint sim "
            "-h)\n"
            "  replay MAILLOG  run a Postfix mail.log through the engine "
            "(chokepoint replay -h)\n"
            "  learn MAILLOG   store what past logs teach of every login "
            "(chokepoint learn -h)\n"
            "options:\n"
            "  -s SOCKET       admin socket (default %s)\n"
            "  --json          print the daemon's JSON reply\n"
            "  --version       print chokepoint's version and exit\n"
            "  --by NAME       who decides (recorded in the history; default:\n"
            "                  the user sudo says ran chokepoint)\n"
            "  --note TEXT     the abuse desk's internal note (--reason is the\n"
            "                  same): history, log, webhook and ARF report;\n"
            "                  never sent to the customer\n"
            "  --tell TEXT     a sentence for the customer's notice ({{message}}\n"
            "                  in the template); without it the customer\n"
            "                  gets the template's own words only\n"
            "  --no-notify     no mail to the customer; the webhook and the\n"
            "                  abuse desk's report still go, and the hold\n"
            "                  still holds the account's queued mail\n"
            "  --create        block, release or allow an account chokepoint\n"
            "                  does not know (never seen, not in the map)\n",
            DEFAULT_SOCKET);
    return rc;
}

static int
connect_admin(const char *path)
{
    struct sockaddr_un sa;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "chokepoint: socket path too long\n");
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "chokepoint: cannot connect to %s: %s\n", path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int
send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* How many arguments each command takes; -1: unknown command. */
static int
ctl_arity(const char *cmd)
{
    static const struct {
        const char *name;
        int args;
    } cmds[] = {{"status", 0}, {"top", 2},     {"show", 1},
                {"history", 1}, {"block", 1},  {"release", 1},
                {"allow", 1},   {"reload", 0},   {"incident", 1}};

    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].args;
    return -1;
}

static bool
ctl_clean(const char *s)
{
    return s == NULL || (strlen(s) <= CLI_MAX_ARG && !strpbrk(s, "\r\n"));
}

/* "chokepoint: WHAT" and the usage; exit code 2. */
static int __attribute__((format(printf, 1, 2)))
usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("chokepoint: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(chokepoint help: the commands and options)\n", stderr);
    return 2;
}

/* One line of text the daemon takes for the customer: no control
 * characters (as the admin socket's read_tell checks). */
static bool
printable_line(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return false;
    return true;
}

int
ctl_main(int argc, char **argv)
{
    const char *sock = DEFAULT_SOCKET, *reason = NULL, *by = NULL;
    const char *tell = NULL;
    bool json = false, self = false, create = false, quiet = false;
    char line[CLI_MAX_ARG * 4], tellw[CLI_MAX_ARG + 16] = ""; /* "tell
                                                    LEN:TEXT " */
    const char *cmd = NULL, *arg = NULL;
    uint64_t top_n;
    int fd, i, n;
    bool err = false, got = false; /* got: the reply's start was read */
    char buf[65536];
    ssize_t r;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];

        if ((strcmp(a, "-s") == 0 || strcmp(a, "--reason") == 0 ||
             strcmp(a, "--note") == 0 || strcmp(a, "--tell") == 0 ||
             strcmp(a, "--by") == 0) &&
            i + 1 >= argc)
            return usage_error("option '%s' needs a value", a);
        if (strcmp(a, "--by") == 0) {
            by = argv[++i];
            continue;
        }
        if (strcmp(a, "-s") == 0)
            sock = argv[++i];
        else if (strcmp(a, "--reason") == 0 || strcmp(a, "--note") == 0)
            reason = argv[++i];
        else if (strcmp(a, "--tell") == 0)
            tell = argv[++i];
        else if (strcmp(a, "--json") == 0)
            json = true;
        else if (strcmp(a, "--self-service") == 0)
            self = true;
        else if (strcmp(a, "--create") == 0)
            create = true;
        else if (strcmp(a, "--no-notify") == 0)
            quiet = true;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return ctl_usage(stdout, 0);
        else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0)
            return printf("chokepoint %s\n", CP_VERSION) < 0;
        else if (a[0] == '-' && a[1] != '\0')
            return usage_error("unknown option '%s'", a);
        else if (cmd == NULL)
            cmd = a;
        else if (arg == NULL)
            arg = a;
        else
            return usage_error("unexpected argument '%s'", a);
    }
    if (cmd == NULL)
        return ctl_usage(stderr, 2);
    if (strcmp(cmd, "help") == 0)
        return ctl_usage(stdout, 0);
    if (ctl_arity(cmd) < 0)
        return usage_error("unknown command '%s'", cmd);
    /* arity 2: an optional argument */
    if (ctl_arity(cmd) == 1 && arg == NULL)
        return usage_error("%s needs an ACCOUNT", cmd);
    if (ctl_arity(cmd) == 0 && arg != NULL)
        return usage_error("%s takes no argument (got '%s')", cmd, arg);
    if (strcmp(cmd, "top") == 0 && arg != NULL &&
        (!parse_u64(arg, strlen(arg), &top_n) || top_n < 1 || top_n > 100))
        return usage_error("top N: N is how many accounts, 1 to 100 (not "
                           "'%s')", arg);
    if (self && strcmp(cmd, "release") != 0)
        return usage_error("--self-service goes with release, not %s", cmd);
    if ((create || by || quiet || tell) && strcmp(cmd, "block") != 0 &&
        strcmp(cmd, "release") != 0 && strcmp(cmd, "allow") != 0)
        return usage_error("%s goes with block, release or allow, not %s",
                           create ? "--create"
                           : by   ? "--by"
                           : tell ? "--tell"
                                  : "--no-notify",
                           cmd);
    if (tell && quiet)
        return usage_error("--tell is for the customer's notice, and "
                           "--no-notify sends none");
    if (tell && (tell[0] == '\0' || strlen(tell) > CLI_MAX_ARG ||
                 !printable_line(tell)))
        return usage_error("--tell: one line of text for the customer "
                           "(no tabs or other control characters, at most %d "
                           "bytes)", CLI_MAX_ARG);
    /* who decides: --by, else the person sudo says ran it */
    if (by == NULL && !self && (strcmp(cmd, "block") == 0 ||
                                strcmp(cmd, "release") == 0 ||
                                strcmp(cmd, "allow") == 0))
        by = getenv("SUDO_USER");
    if (by != NULL && (by[0] == '\0' || strlen(by) > 64 ||
                       strspn(by, "abcdefghijklmnopqrstuvwxyz"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789._-@") != strlen(by)))
        return usage_error("--by: a name of letters, digits and . _ - @ "
                           "(at most 64), not '%s'", by);
    if (self && (reason == NULL || reason[0] == '\0'))
        reason = "the customer confirmed the clean-up";
    if ((strcmp(cmd, "block") == 0 || strcmp(cmd, "release") == 0 ||
         strcmp(cmd, "allow") == 0) &&
        (reason == NULL || reason[0] == '\0')) {
        fprintf(stderr, "chokepoint: %s needs --note TEXT (the abuse desk's "
                        "own note, recorded in the account's history; "
                        "--tell TEXT is what the customer reads)\n",
                cmd);
        return 2;
    }
    if (!ctl_clean(arg) || (arg && strchr(arg, ' ')))
        return usage_error("the account may not have spaces or line breaks, "
                           "or more than %d bytes", CLI_MAX_ARG);
    if (!ctl_clean(reason))
        return usage_error("--note may not have line breaks, or more than "
                           "%d bytes", CLI_MAX_ARG);
    if (tell)
        snprintf(tellw, sizeof(tellw), "tell %zu:%s ", strlen(tell), tell);
    n = snprintf(line, sizeof(line), "%s%s%s%s%s%s%s%s%s%s%s%s\n",
                 json ? "json " : "", create ? "create " : "",
                 quiet ? "quiet " : "", tellw,
                 by ? "by " : "", by ? by : "", by ? " " : "",
                 self ? "self-release" : cmd, arg ? " " : "", arg ? arg : "",
                 reason ? " " : "",
                 reason ? reason : "");
    if (n < 0 || (size_t)n > CLI_MAX_LINE)
        return usage_error("the account, --note and --tell together are "
                           "longer than chokepointd takes (%d bytes): "
                           "shorten them", CLI_MAX_LINE);
    if ((fd = connect_admin(sock)) < 0)
        return 3;
    if (send_all(fd, line, (size_t)n) < 0) {
        fprintf(stderr, "chokepoint: write: %s\n", strerror(errno));
        close(fd);
        return 3;
    }
    while ((r = read(fd, buf, sizeof(buf))) > 0) {
        /* a refusal: "error: ..." or the error document (strbuf.h) */
        static const char jerr[] = "{\"schema\":\"" CP_JSON_ERROR "\"";

        if (!got && ((r >= 6 && memcmp(buf, "error:", 6) == 0) ||
                     ((size_t)r >= sizeof(jerr) - 1 &&
                      memcmp(buf, jerr, sizeof(jerr) - 1) == 0)))
            err = true;
        got = true;
        fwrite(buf, 1, (size_t)r, stdout);
    }
    close(fd);
    return err ? 1 : 0;
}
