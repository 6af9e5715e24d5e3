/*
 * main.c — `chokepoint`: dispatch to the subcommand. `sim` and `replay` run
 * the engine in this process (cli/inproc.c); every other command talks to
 * a running chokepointd (cli/ctl.c).
 */
#include <string.h>

#include "cli/cli.h"

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
            return sim_main(argc - i, argv + i);
        if (strcmp(argv[i], "replay") == 0)
            return replay_main(argc - i, argv + i);
        break;
    }
    return ctl_main(argc, argv);
}
