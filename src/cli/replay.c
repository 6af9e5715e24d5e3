/* replay.c — `chokepoint replay`: not yet written. */
#include <stdio.h>

#include "cli/cli.h"

int
replay_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "chokepoint replay: not yet implemented\n");
    return 2;
}
