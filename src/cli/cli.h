/*
 * cli.h — the subcommands of `chokepoint`. Each takes the arguments from
 * its own name on (argv[0] is the subcommand) and returns the exit status.
 */
#ifndef CP_CLI_CLI_H
#define CP_CLI_CLI_H

/* status, show: talk to a running chokepointd (ctl.c); argv is the whole
 * command line. */
int ctl_main(int argc, char **argv);
/* chokepoint sim SCENARIO.yaml [...] (sim.c) */
int sim_main(int argc, char **argv);
/* chokepoint replay MAILLOG... [...], and chokepoint learn MAILLOG...
 * [...] (argv[0] "learn": the same reading, stored as habits; replay.c) */
int replay_main(int argc, char **argv);

#endif
