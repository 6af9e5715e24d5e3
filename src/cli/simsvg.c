/*
 * simsvg.c — the simulator's charts as plain SVG files (no library: a
 * chart is a few dozen rectangles and lines):
 *   volume.svg           messages per hour, ham and spam stacked, without
 *                        chokepoint (tried) and with it (sent)
 *   spam-per-zombie.svg  zombies by spam messages accepted from them
 *   legit-deferrals.svg  deferrals of legitimate mail per hour
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/sim.h"

#define W 960
#define H 300
#define ML 70 /* left margin */
#define MB 40 /* bottom margin */
#define MT 36 /* top margin */

struct stack {
    const uint32_t *v[2];
    const char *label[2], *color[2];
    int n;
};

static void
header(FILE *fp, int h, const char *title)
{
    fprintf(fp, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                "height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n"
                "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
                "<text x=\"%d\" y=\"20\" font-size=\"15\">%s</text>\n",
            W, h, ML, title);
}

static double
nice_max(double m)
{
    double p = 1;

    while (p * 10 <= m)
        p *= 10;
    for (int k = 1; k <= 10; k++)
        if (k * p >= m)
            return k * p;
    return m > 0 ? m : 1;
}

/* One stacked bar panel at vertical offset y0 with height ph. */
static void
panel(FILE *fp, int y0, int ph, const struct stack *st, uint32_t n,
      double ymax, const char *title, uint32_t days)
{
    double bw = (double)(W - ML - 20) / n;

    fprintf(fp, "<text x=\"%d\" y=\"%d\">%s</text>\n", ML, y0 - 6, title);
    for (uint32_t i = 0; i < n; i++) {
        double base = 0;

        for (int k = 0; k < st->n; k++) {
            double v = st->v[k][i], hh = v / ymax * ph;

            if (v <= 0)
                continue;
            fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" "
                        "height=\"%.2f\" fill=\"%s\"/>\n",
                    ML + i * bw, y0 + ph - base - hh, bw + 0.3, hh,
                    st->color[k]);
            base += hh;
        }
    }
    fprintf(fp, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" "
                "stroke=\"black\"/>\n",
            ML, y0 + ph, W - 20, y0 + ph);
    fprintf(fp, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.0f/h</text>\n",
            ML - 4, y0 + 10, ymax);
    fprintf(fp, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text>\n",
            ML - 4, y0 + ph);
    for (uint32_t d = 0; d <= days; d++)
        fprintf(fp, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                    "stroke=\"#999\" stroke-dasharray=\"2,3\"/>"
                    "<text x=\"%.1f\" y=\"%d\" fill=\"#555\">day %u</text>\n",
                ML + d * 24 * bw, y0, ML + d * 24 * bw, y0 + ph + 4,
                ML + d * 24 * bw + 3, y0 + ph + 16, d + 1);
}

static void
legend(FILE *fp, int y, const struct stack *st)
{
    for (int k = 0; k < st->n; k++)
        fprintf(fp, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" "
                    "fill=\"%s\"/><text x=\"%d\" y=\"%d\">%s</text>\n",
                W - 260 + k * 120, y - 10, st->color[k], W - 244 + k * 120, y,
                st->label[k]);
}

static double
stack_max(const struct stack *st, uint32_t n)
{
    double m = 0;

    for (uint32_t i = 0; i < n; i++) {
        double v = 0;

        for (int k = 0; k < st->n; k++)
            v += st->v[k][i];
        m = v > m ? v : m;
    }
    return nice_max(m);
}

static FILE *
open_chart(const char *dir, const char *name)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return fopen(path, "w");
}

static int
volume(const char *dir, const struct sim *s)
{
    const struct sim_series *se = &s->series;
    struct stack before = {{se->ham_tried, se->spam_tried},
                           {"legitimate", "spam"},
                           {"#4a7ab5", "#d9534f"},
                           2};
    struct stack after = {{se->ham_sent, se->spam_sent},
                          {"legitimate", "spam"},
                          {"#4a7ab5", "#d9534f"},
                          2};
    double ymax = stack_max(&before, se->hours);
    FILE *fp = open_chart(dir, "volume.svg");

    if (fp == NULL)
        return -1;
    header(fp, 2 * H, "Outbound messages per hour (simulated ISP)");
    legend(fp, 20, &before);
    panel(fp, MT + 20, H - MT - MB, &before, se->hours, ymax,
          "without chokepoint (every message tried)", s->sc.days);
    panel(fp, H + MT, H - MT - MB, &after, se->hours, ymax,
          "with chokepoint (messages sent)", s->sc.days);
    fprintf(fp, "</svg>\n");
    return fclose(fp);
}

static int
deferrals(const char *dir, const struct sim *s)
{
    const struct sim_series *se = &s->series;
    struct stack st = {{se->legit_defer}, {"legit deferrals"}, {"#f0ad4e"}, 1};
    FILE *fp = open_chart(dir, "legit-deferrals.svg");

    if (fp == NULL)
        return -1;
    header(fp, H, "Deferred attempts of legitimate mail per hour");
    panel(fp, MT + 20, H - MT - MB - 20, &st, se->hours,
          stack_max(&st, se->hours), "", s->sc.days);
    fprintf(fp, "</svg>\n");
    return fclose(fp);
}

static int
per_zombie(const char *dir, const struct sim *s)
{
    static const char *const bins[] = {"0", "1-10", "11-100", "101-1k",
                                       "1k-10k", ">10k"};
    uint32_t count[6] = {0}, max = 1;
    FILE *fp = open_chart(dir, "spam-per-zombie.svg");

    if (fp == NULL)
        return -1;
    for (uint32_t i = 0; i < s->nzombies; i++) {
        uint32_t a = s->zombies[i].spam_accepted;
        int b = a == 0 ? 0 : a <= 10 ? 1 : a <= 100 ? 2 : a <= 1000 ? 3
                : a <= 10000 ? 4 : 5;

        count[b]++;
    }
    for (int b = 0; b < 6; b++)
        max = count[b] > max ? count[b] : max;
    header(fp, H, "Zombie accounts by spam messages accepted from them");
    for (int b = 0; b < 6; b++) {
        double bh = (double)count[b] / nice_max(max) * (H - MT - MB - 20);
        int x = ML + b * 140;

        fprintf(fp, "<rect x=\"%d\" y=\"%.1f\" width=\"110\" height=\"%.1f\" "
                    "fill=\"#d9534f\"/><text x=\"%d\" y=\"%d\">%s</text>"
                    "<text x=\"%d\" y=\"%.1f\">%u</text>\n",
                x, H - MB - bh, bh, x + 30, H - MB + 16, bins[b], x + 40,
                H - MB - bh - 4, count[b]);
    }
    fprintf(fp, "</svg>\n");
    return fclose(fp);
}

int
sim_write_svg(const char *dir, const struct sim *s)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -1;
    if (volume(dir, s) != 0 || deferrals(dir, s) != 0 ||
        per_zombie(dir, s) != 0)
        return -1;
    return 0;
}
