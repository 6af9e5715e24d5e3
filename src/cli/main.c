/*
 * main.c — `chokepoint`: dispatch to the subcommand. `sim` and `replay` run
 * the engine in this process (cli/inproc.c); every other command talks to
 * a running chokepointd (cli/ctl.c).
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/*
 * Call a subcommand with its name first and every other argument after it,
 * so options given before the name (`chokepoint --json replay …`) count.
 */
static int
run_sub(int (*fn)(int, char **), int argc, char **argv, int at)
{
    char **v = calloc((size_t)argc + 1, sizeof(*v));
    int n = 0, rc;

    if (v == NULL)
        abort();
    v[n++] = argv[at];
    for (int i = 1; i < argc; i++)
        if (i != at)
            v[n++] = argv[i];
    rc = fn(n, v);
    free(v);
    return rc;
}

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-s") == 0) {
            i++; /* skip the option's value */
            continue;
        }
        if (argv[i][0] == '-')
            continue;
        if (strcmp(argv[i], "sim") == 0)
            return run_sub(sim_main, argc, argv, i);
        if (strcmp(argv[i], "replay") == 0 || strcmp(argv[i], "learn") == 0)
            return run_sub(replay_main, argc, argv, i);
        break;
    }
    return ctl_main(argc, argv);
}
