/*
 * test_spawn.c — src/daemon/spawn.c: a command's exit status, output,
 * stdin and timeout, and what happens when poll() itself fails.
 *
 * The executable is linked with -Wl,--wrap=poll,--wrap=posix_spawn
 * (tests/meson.build): __wrap_poll fails once with EINVAL when a test asks
 * for it, __wrap_posix_spawn records the child's pid so that a test can
 * check the child was reaped (waitpid(pid, WNOHANG) fails with ECHILD: no
 * zombie, no child left running).
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "daemon/daemon.h"

static int poll_fail_errno; /* != 0: the next poll() fails with it */
static pid_t last_pid;

int __real_poll(struct pollfd *fds, nfds_t n, int timeout);
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout);
int __real_posix_spawn(pid_t *pid, const char *path,
                       const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[],
                       char *const envp[]);
int __wrap_posix_spawn(pid_t *pid, const char *path,
                       const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[],
                       char *const envp[]);

int
__wrap_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (poll_fail_errno != 0) {
        errno = poll_fail_errno;
        poll_fail_errno = 0;
        return -1;
    }
    return __real_poll(fds, n, timeout);
}

int
__wrap_posix_spawn(pid_t *pid, const char *path,
                   const posix_spawn_file_actions_t *fa,
                   const posix_spawnattr_t *attr, char *const argv[],
                   char *const envp[])
{
    int rc = __real_posix_spawn(pid, path, fa, attr, argv, envp);

    last_pid = rc == 0 ? *pid : 0;
    return rc;
}

/* The last child is gone: reaped by spawn_run, not left running or as a
 * zombie. If not, it is killed and reaped here (the test fails anyway). */
static bool
reaped(void)
{
    pid_t r = waitpid(last_pid, NULL, WNOHANG);

    if (r == -1 && errno == ECHILD)
        return true;
    kill(last_pid, SIGKILL);
    waitpid(last_pid, NULL, 0);
    return false;
}

static void
test_exit_status(void **state)
{
    char out[256];

    assert_int_equal(
        spawn_run("/bin/echo hello", NULL, NULL, 0, 5000, out, sizeof(out)), 0);
    assert_string_equal(out, "hello\n");
    assert_true(reaped());
    assert_int_equal(spawn_run("/bin/sh -c",
                               (const char *[]){"echo no; exit 3", NULL}, NULL,
                               0, 5000, out, sizeof(out)),
                     -1);
    assert_string_equal(out, "no; exit status 3");
    assert_true(reaped());
}

static void
test_stdin(void **state)
{
    static const char in[] = "line one\nline two\n";
    char out[256];

    assert_int_equal(
        spawn_run("/bin/cat", NULL, in, strlen(in), 5000, out, sizeof(out)), 0);
    assert_string_equal(out, in);
    assert_true(reaped());
}

static void
test_output_cap(void **state)
{
    char out[8];

    /* more output than kept: the rest is read and dropped, no deadlock */
    assert_int_equal(spawn_run("/bin/sh -c",
                               (const char *[]){"yes | head -c 200000", NULL},
                               NULL, 0, 5000, out, sizeof(out)),
                     0);
    assert_string_equal(out, "y\ny\ny\ny");
    assert_true(reaped());
}

static void
test_timeout(void **state)
{
    char out[256];

    assert_int_equal(
        spawn_run("/bin/sleep 10", NULL, NULL, 0, 100, out, sizeof(out)), -1);
    assert_string_equal(out, "timed out after 100 ms");
    assert_true(reaped());
}

static void
test_missing_command(void **state)
{
    char out[256];

    last_pid = 0;
    assert_int_equal(
        spawn_run("/nonexistent/cmd", NULL, NULL, 0, 1000, out, sizeof(out)),
        -1);
    assert_non_null(strstr(out, "/nonexistent/cmd: "));
    assert_int_equal(last_pid, 0);
    assert_int_equal(spawn_run(" \t", NULL, NULL, 0, 1000, out, sizeof(out)),
                     -1);
    assert_string_equal(out, "empty or too long command");
}

/* A poll() error is a failure (with the reason), and the child is killed
 * and reaped: it used to count as success with the child left running. */
static void
test_poll_error(void **state)
{
    char out[256];
    int rc;
    bool gone;

    poll_fail_errno = EINVAL;
    rc = spawn_run("/bin/sleep 10", NULL, "x", 1, 5000, out, sizeof(out));
    gone = reaped();
    poll_fail_errno = 0;
    assert_int_equal(rc, -1);
    assert_true(gone);
    assert_non_null(strstr(out, "poll: "));
    assert_non_null(strstr(out, strerror(EINVAL)));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_status),
        cmocka_unit_test(test_stdin),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_missing_command),
        cmocka_unit_test(test_poll_error),
    };

    signal(SIGPIPE, SIG_IGN); /* as chokepointd */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
