/*
 * fuzz_daemon.c — libFuzzer targets for the daemon as it runs: a real
 * chokepointd (daemon_open(), the same start-up as the binary) serves
 * its unix sockets from this process, and the fuzzer's input reaches it
 * through a real socket and its libuv loop, or through the mail log:
 *
 *   FUZZ_CONN       the policy connection loop (conn.c: reads, framing,
 *                   pipelining, replies, protocol errors, closes)
 *   FUZZ_MILTER     a milter session (daemon/milter.c over the codec)
 *   FUZZ_ADMIN      the admin protocol (admin.c: every command, with
 *                   hostile accounts and reasons)
 *   FUZZ_LOGFOLLOW  the mail-log follower (logfollow.c: appends,
 *                   truncations, rotations, then one poll)
 *
 * One build per target (-DFUZZ_TARGET=...). The daemon lives for the whole
 * run, so state accumulates across inputs, as in production. The client
 * side is non-blocking and every loop is bounded: a daemon that stops
 * answering shows as a timeout, a crash or a sanitizer report as such.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/msg.h"

#define FUZZ_CONN 1
#define FUZZ_MILTER 2
#define FUZZ_ADMIN 3
#define FUZZ_LOGFOLLOW 4

#ifndef FUZZ_TARGET
#error "build with -DFUZZ_TARGET=FUZZ_CONN (or _MILTER, _ADMIN, _LOGFOLLOW)"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct daemon D;
static char dir[64], policy[96], milter[96], admin[96], maillog[96];

static const char config_text[] =
    "daemon:\n  listen: [unix:%s]\n  admin_socket: %s\n"
    "  log_level: error\n"
    "protocol:\n  idle_timeout: 1h\n  max_connections: 64\n"
    "store:\n  path: %s/state.db\n  checkpoint_interval: 1h\n"
    "delivery:\n  log: %s\n  poll: 60s\n  max_recipients: 1024\n"
    "  max_queue_ids: 256\n"
    "content:\n  milter: unix:%s\n  campaign_accounts: 2\n"
    "notify:\n  customer: false\n"
    "detection:\n  learning: 2\n"
    "classes:\n  residential:\n    limits:\n"
    "      - { metric: messages, window: 1h, max: 20 }\n"
    "      - { metric: domains, window: 1h, max: 5, action: reject }\n"
    "  unauthenticated:\n    limits:\n"
    "      - { metric: messages, window: 1h, max: 5 }\n";

static void
pump(int rounds)
{
    for (int i = 0; i < rounds; i++)
        uv_run(D.loop, UV_RUN_NOWAIT);
}

static int
dial(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
        abort(); /* the daemon's socket must take a connection */
    return fd;
}

/* Read what the daemon sent (and drop it); false once it closed. */
static bool
drain(int fd)
{
    char buf[65536];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n > 0)
            continue;
        return n < 0 && (errno == EAGAIN || errno == EINTR);
    }
}

/* Send data in chunks whose sizes the first byte picks, letting the loop
 * run between them, then end the connection and wait until the daemon has
 * closed its side (bounded). */
static void
converse(const char *path, const uint8_t *data, size_t size)
{
    size_t step = size > 0 ? (size_t)data[0] * 8 + 1 : 1, off = 1;
    int fd = dial(path);
    bool open = true;

    pump(2);
    while (off < size && open) {
        size_t n = size - off < step ? size - off : step;
        ssize_t w = write(fd, data + off, n);

        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR)
            break; /* the daemon closed: the rest is not read */
        pump(2);
        open = drain(fd);
    }
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 200 && open; i++) {
        pump(1);
        open = drain(fd);
    }
    close(fd);
    for (int i = 0; i < 200 && D.nconns > 0; i++)
        pump(1);
}

#if FUZZ_TARGET == FUZZ_LOGFOLLOW
/* Queue ids the log lines can name (the seeds use them). */
static void
record_queue_ids(void)
{
    static const char req[] =
        "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\n"
        "sasl_username=ann@isp.example\nclient_address=192.0.2.%d\n"
        "sender=ann@isp.example\nrecipient_count=1\nsize=100\n"
        "queue_id=4F%dA\ninstance=i%d\n\n";
    uint8_t msg[600];

    msg[0] = 0xff; /* one chunk (see converse) */
    for (int i = 0; i < 8; i++) {
        int n = snprintf((char *)msg + 1, sizeof(msg) - 1, req, i, i, i);

        converse(policy, msg, (size_t)n + 1);
    }
}

/*
 * Input: operations of [op][2-byte length][bytes]: op % 4 = 0 append,
 * 1 truncate then append, 2 rotate (rename to .1, new file) then append,
 * 3 append and poll now; a poll after the last one.
 */
static void
logfile_ops(const uint8_t *data, size_t size)
{
    size_t off = 0;

    while (off + 3 <= size) {
        unsigned op = data[off] % 4;
        size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
        int fd, flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;

        off += 3;
        if (len > size - off)
            len = size - off;
        if (op == 1)
            flags |= O_TRUNC;
        if (op == 2) {
            char old[128];

            snprintf(old, sizeof(old), "%s.1", maillog);
            rename(maillog, old);
        }
        if ((fd = open(maillog, flags, 0600)) < 0)
            abort();
        if (write(fd, data + off, len) != (ssize_t)len)
            abort();
        close(fd);
        off += len;
        if (op == 3)
            logfollow_tick(D.logfollow);
    }
    logfollow_tick(D.logfollow);
    pump(1);
}
#endif

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[128];
    FILE *fp;

    (void)argc;
    (void)argv;
    snprintf(dir, sizeof(dir), "/dev/shm/fuzz-daemon-XXXXXX");
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(policy, sizeof(policy), "%s/policy.sock", dir);
    snprintf(milter, sizeof(milter), "%s/milter.sock", dir);
    snprintf(admin, sizeof(admin), "%s/admin.sock", dir);
    snprintf(maillog, sizeof(maillog), "%s/mail.log", dir);
    snprintf(path, sizeof(path), "%s/chokepoint.yaml", dir);
    if ((fp = fopen(path, "w")) == NULL)
        abort();
    fprintf(fp, config_text, policy, admin, dir, maillog, milter);
    fclose(fp);
    if ((fp = fopen(maillog, "w")) == NULL)
        abort();
    fclose(fp);
    daemon_open(&D, path, false, true);
    pump(4);
#if FUZZ_TARGET == FUZZ_LOGFOLLOW
    record_queue_ids();
#endif
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#if FUZZ_TARGET == FUZZ_CONN
    converse(policy, data, size);
#elif FUZZ_TARGET == FUZZ_MILTER
    converse(milter, data, size);
#elif FUZZ_TARGET == FUZZ_ADMIN
    converse(admin, data, size);
#else
    logfile_ops(data, size);
#endif
    return 0;
}
