/* sim.c — `chokepoint sim`: not yet written. */
#include <stdio.h>

#include "cli/cli.h"

int
sim_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "chokepoint sim: not yet implemented\n");
    return 2;
}
