/*
 * sim.c — `chokepoint sim SCENARIO.yaml [--config FILE] [--json]
 * [--svg DIR] [--live SOCKET] [--map-out FILE] [--explain]`.
 *
 * Builds the simulated ISP from the scenario (simgen.c), writes the customer
 * map that tells chokepoint each customer's class, plays the stream
 * through the engine (simrun.c) and prints the efficacy report
 * (simreport.c). In-process runs use the config with the generated map in
 * place of its own; --live sends the same requests to a running
 * chokepointd started with --sim-clock and that map (--map-out).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/sim.h"
#include "util/clock.h"

void
sim_die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "chokepoint sim: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static int
usage(FILE *fp, int rc)
{
    fprintf(fp,
            "usage: chokepoint sim SCENARIO.yaml [--config FILE] [--json] "
            "[--svg DIR]\n"
            "                      [--live SOCKET] [--map-out FILE] "
            "[--explain]\n"
            "                      [--trace LOGIN] [--maillog FILE [--history-log "
            "FILE]\n"
            "                      [--truth FILE]]\n"
            "                      [--no-content]\n"
            "  --config FILE   chokepoint configuration (default "
            "etc/chokepoint.yaml)\n"
            "  --json          print the report as one JSON object\n"
            "  --svg DIR       write charts into DIR\n"
            "  --live SOCKET   send the requests to a chokepointd started "
            "with --sim-clock\n"
            "  --map-out FILE  write the customer map (for --live) and exit\n"
            "  --trace LOGIN   print to stderr every decision about LOGIN's mail, "
            "with the\n"
            "                  signals that fired and the score\n"
            "  --explain       print to stderr the evidence of every "
            "legitimate account\n"
            "                  that was throttled or blocked (false "
            "positives)\n"
            "  --maillog FILE  no chokepoint: write the traffic as Postfix logs "
            "it (every\n"
            "                  message accepted), for chokepoint replay, "
            "and exit\n"
            "  --history-log FILE  with --maillog: a warm start's history "
            "(for\n"
            "                  chokepoint learn)\n"
            "  --truth FILE    with --maillog: the ground truth (spam queue "
            "ids, zombies)\n"
            "  --no-content    leave out the milter's content fingerprints "
            "(as if\n"
            "                  content.milter were unset)\n");
    return rc;
}

/*
 * The customer map (scenario `map:`): one line per login (or, for
 * customers who relay by address, per address) → customer id and class;
 * a business's logins are one customer with its domains (`customers`),
 * or every login its own customer (`logins`), or no map at all (`none`).
 */
static void
write_map(const struct sim *s, const char *path)
{
    FILE *fp = fopen(path, "w");
    char login[64], dom[48];

    if (fp == NULL)
        sim_die("%s: cannot write the customer map", path);
    for (uint32_t i = 0; i < s->nsenders && s->sc.map != SIM_MAP_NONE; i++) {
        const struct sim_sender *p = &s->senders[i];
        const struct sim_class *k = &s->sc.cls[p->cls];

        sim_login(s, login, sizeof(login), i);
        if (!k->sasl)
            sim_format_ip(login, sizeof(login), p->ip);
        if (s->sc.map == SIM_MAP_LOGINS || !(p->flags & SIM_STAFF)) {
            fprintf(fp, "%s %c%07u %s\n", login,
                    s->sc.map == SIM_MAP_LOGINS ? 'l' : 'c',
                    s->sc.map == SIM_MAP_LOGINS ? i : p->cust, k->name);
            continue;
        }
        fprintf(fp, "%s c%07u", login, p->cust);
        if (p->slot == 0) { /* the customer's class and domains, once */
            fprintf(fp, " %s domains=", k->name);
            for (uint32_t d = 0; d < k->staff.domains; d++) {
                sim_domain(dom, sizeof(dom), p->cust, d);
                fprintf(fp, "%s%s", d ? "," : "", dom);
            }
        }
        fputc('\n', fp);
    }
    if (fclose(fp) != 0)
        sim_die("%s: write error", path);
}

struct opts {
    const char *scenario, *config, *svg, *live, *map_out, *trace;
    const char *maillog, *history_log, *truth;
    bool json, explain, no_content;
};

static int
parse_args(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->config = "etc/chokepoint.yaml";
    for (int i = 1; i < argc; i++) {
        bool more = i + 1 < argc;

        if (strcmp(argv[i], "--json") == 0)
            o->json = true;
        else if (strcmp(argv[i], "--explain") == 0)
            o->explain = true;
        else if (strcmp(argv[i], "--no-content") == 0)
            o->no_content = true;
        else if (strcmp(argv[i], "--config") == 0 && more)
            o->config = argv[++i];
        else if (strcmp(argv[i], "--trace") == 0 && more)
            o->trace = argv[++i];
        else if (strcmp(argv[i], "--svg") == 0 && more)
            o->svg = argv[++i];
        else if (strcmp(argv[i], "--live") == 0 && more)
            o->live = argv[++i];
        else if (strcmp(argv[i], "--map-out") == 0 && more)
            o->map_out = argv[++i];
        else if (strcmp(argv[i], "--maillog") == 0 && more)
            o->maillog = argv[++i];
        else if (strcmp(argv[i], "--history-log") == 0 && more)
            o->history_log = argv[++i];
        else if (strcmp(argv[i], "--truth") == 0 && more)
            o->truth = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return usage(stdout, 0) - 1;
        else if (argv[i][0] != '-' && o->scenario == NULL)
            o->scenario = argv[i];
        else
            return usage(stderr, 2);
    }
    if ((o->history_log || o->truth) && o->maillog == NULL)
        return usage(stderr, 2);
    return o->scenario ? 0 : usage(stderr, 2);
}

static FILE *
create(const char *path)
{
    FILE *fp = fopen(path, "w");

    if (fp == NULL)
        sim_die("%s: cannot write: %s", path, strerror(errno));
    return fp;
}

static void
finish(FILE *fp, const char *path)
{
    if (fp != NULL && (ferror(fp) || fclose(fp) != 0))
        sim_die("%s: write error", path);
}

static double
now_s(void)
{
    return (double)clock_mono_us() / 1e6;
}

static void
open_driver(struct sim *s, const struct opts *o, struct sim_driver *d)
{
    char map[] = "/tmp/chokepoint-sim-map-XXXXXX", err[CP_ERR_MAX];
    int fd;

    memset(d, 0, sizeof(*d));
    if (o->maillog) { /* no chokepoint: the traffic into a mail log */
        d->log = create(o->maillog);
        d->hlog = o->history_log ? create(o->history_log) : NULL;
        d->truthlog = o->truth ? create(o->truth) : NULL;
        return;
    }
    if (o->live) {
        if (s->sc.delivery)
            sim_die("%s: --live cannot report delivery outcomes (chokepointd "
                    "reads them from the mail log); set 'delivery: false'",
                    s->sc.file);
        if (sim_live_connect(d, o->live) < 0)
            sim_die("cannot connect to %s", o->live);
        return;
    }
    if ((fd = mkstemp(map)) < 0)
        sim_die("cannot create a temporary file");
    close(fd);
    write_map(s, map);
    if (inproc_open(&d->ip, o->config, true, map, err) < 0) {
        unlink(map);
        sim_die("%s", err);
    }
    unlink(map);
    sim_truth_init(&d->truth, s, d->ip.cfg);
    d->truth.explain = o->explain ? stderr : NULL;
    d->trace = o->trace;
    d->truth.store = &d->ip.ms->base;
    d->truth.cfg = d->ip.cfg;
    d->ip.on_change = sim_truth_transition;
    d->ip.change_arg = &d->truth;
    s->ranked = true;
    /* the milter's fingerprints, when the config has the milter */
    d->content = d->ip.cfg->content.milter[0] != '\0' && !o->no_content;
}

int
sim_main(int argc, char **argv)
{
    static struct sim s; /* large; lives for the whole run */
    struct sim_driver d;
    struct sim_metrics m;
    struct opts o;
    char err[512];
    double t0;
    int rc;

    if ((rc = parse_args(argc, argv, &o)) != 0)
        return rc < 0 ? 0 : rc;
    if (scenario_load(o.scenario, &s.sc, err) < 0)
        sim_die("%s", err);
    t0 = now_s();
    sim_generate(&s);
    if (o.map_out) {
        write_map(&s, o.map_out);
        sim_free(&s);
        return 0;
    }
    open_driver(&s, &o, &d);
    sim_run(&s, &d);
    s.wall_s = now_s() - t0;
    sim_metrics(&s, &m);
    if (d.log != NULL) {
        if (d.truthlog != NULL)
            simlog_truth(d.truthlog, &s, &m);
        finish(d.log, o.maillog);
        finish(d.hlog, o.history_log);
        finish(d.truthlog, o.truth);
        printf("wrote %llu messages (%llu spam) of %s to %s%s%s\n",
               (unsigned long long)(s.tot.ham + s.tot.spam),
               (unsigned long long)s.tot.spam, s.sc.file, o.maillog,
               o.history_log ? ", its history to " : "",
               o.history_log ? o.history_log : "");
        sim_free(&s);
        return 0;
    }
    if (o.json)
        sim_report_json(stdout, &s, &m, o.config);
    else
        sim_report_text(stdout, &s, &m, o.config);
    if (o.svg && sim_write_svg(o.svg, &s) < 0)
        sim_die("%s: cannot write the charts", o.svg);
    if (d.live)
        close(d.fd);
    else
        inproc_close(&d.ip);
    sim_truth_fini(&d.truth);
    sim_free(&s);
    return 0;
}
