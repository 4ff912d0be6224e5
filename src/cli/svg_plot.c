#include "svg_plot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Layout (pixels): three panels stacked, legends to the right of each. */
enum {
    WIDTH = 960,
    TITLE_H = 48,
    PANEL_H = 250,
    GAP = 80, /* room for the x-axis label below a panel and the title above the next */
    LEFT = 80,
    PLOT_W = 640,
    LEGEND_X = LEFT + PLOT_W + 24
};

static const char *const series_color[3] = {"#d62728", "#1f77b4", "#7f7f7f"};
static const char *const series_name[3] = {"best so far", "elite mean", "population mean"};
static const char *const series_key[3] = {"best", "elite_mean", "pop_mean"};
static const char *const expert_color[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                             "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

/* Experts named after a colour (the demo's red, green, blue, gold) are drawn in it. */
static const struct {
    const char *name, *hex;
} named_color[] = {{"red", "#d62728"},    {"green", "#2ca02c"},  {"blue", "#1f77b4"},
                   {"gold", "#d4a017"},   {"orange", "#ff7f0e"}, {"purple", "#9467bd"},
                   {"brown", "#8c564b"},  {"pink", "#e377c2"},   {"gray", "#7f7f7f"},
                   {"grey", "#7f7f7f"},   {"olive", "#bcbd22"},  {"cyan", "#17becf"},
                   {"yellow", "#e6c700"}, {"black", "#000000"},  {"teal", "#008080"},
                   {"navy", "#000080"},   {"magenta", "#c000c0"}};

const char *plot_expert_color(const char *name, int k)
{
    for (size_t i = 0; name && i < sizeof named_color / sizeof *named_color; i++) {
        const char *a = name, *b = named_color[i].name;
        while (*a && *b && (*a | 0x20) == *b) a++, b++;
        if (!*a && !*b) return named_color[i].hex;
    }
    return expert_color[k % 10];
}

double plot_scale(double v, double d0, double d1, double r0, double r1)
{
    if (!(d1 > d0)) return 0.5 * (r0 + r1);
    return r0 + (v - d0) * (r1 - r0) / (d1 - d0);
}

int plot_nice_ticks(double lo, double hi, int max_ticks, double *ticks, int cap, double *step)
{
    if (!(hi > lo) || max_ticks < 2 || cap < 1) {
        if (cap >= 1) ticks[0] = lo;
        if (step) *step = 0;
        return cap >= 1 ? 1 : 0;
    }
    double raw = (hi - lo) / (max_ticks - 1);
    double mag = pow(10.0, floor(log10(raw)));
    static const double mults[] = {1, 2, 2.5, 5, 10};
    double s = 10 * mag;
    for (size_t i = 0; i < sizeof mults / sizeof *mults; i++)
        if (mults[i] * mag >= raw) {
            s = mults[i] * mag;
            break;
        }
    double first = ceil(lo / s - 1e-9) * s;
    int n = 0;
    for (double t = first; t <= hi + s * 1e-9 && n < cap; t = first + n * s) {
        ticks[n++] = fabs(t) < s * 1e-9 ? 0.0 : t; /* no "-0" labels */
    }
    if (step) *step = s;
    return n;
}

void plot_range(const double *a, const double *b, const double *c, int n, double *lo, double *hi)
{
    double mn = INFINITY, mx = -INFINITY;
    const double *arrs[3] = {a, b, c};
    for (int k = 0; k < 3; k++)
        for (int i = 0; arrs[k] && i < n; i++)
            if (isfinite(arrs[k][i])) {
                if (arrs[k][i] < mn) mn = arrs[k][i];
                if (arrs[k][i] > mx) mx = arrs[k][i];
            }
    if (!isfinite(mn)) {
        *lo = 0;
        *hi = 1;
        return;
    }
    double pad = mx > mn ? 0.05 * (mx - mn) : (fabs(mx) > 0 ? 0.05 * fabs(mx) : 0.5);
    *lo = mn - pad;
    *hi = mx + pad;
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

typedef struct panel {
    double top;            /* pixel y of the plot area's top */
    double x0, x1, y0, y1; /* data ranges */
} panel;

static double px(const panel *p, double x)
{
    return plot_scale(x, p->x0, p->x1, LEFT, LEFT + PLOT_W);
}

static double py(const panel *p, double y)
{
    return plot_scale(y, p->y0, p->y1, p->top + PANEL_H, p->top);
}

static void axes(FILE *f, const panel *p, const char *title, const char *ylabel)
{
    fprintf(f, "<g class=\"panel\">\n");
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"15\" font-weight=\"bold\">", LEFT,
            p->top - 12);
    xml_text(f, title);
    fprintf(f, "</text>\n");
    fprintf(f,
            "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"none\" "
            "stroke=\"#333\"/>\n",
            LEFT, p->top, PLOT_W, PANEL_H);
    double ticks[32], step;
    int n = plot_nice_ticks(p->y0, p->y1, 6, ticks, 32, &step);
    for (int i = 0; i < n; i++) {
        double y = py(p, ticks[i]);
        fprintf(f,
                "<line class=\"grid\" x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" "
                "stroke=\"#ddd\"/>\n",
                LEFT, y, LEFT + PLOT_W, y);
        fprintf(f,
                "<text class=\"ytick\" x=\"%d\" y=\"%.2f\" font-size=\"11\" "
                "text-anchor=\"end\">%.4g</text>\n",
                LEFT - 6, y + 4, ticks[i]);
    }
    n = plot_nice_ticks(p->x0, p->x1, 10, ticks, 32, &step);
    for (int i = 0; i < n; i++) {
        if (step < 1 && fabs(ticks[i] - round(ticks[i])) > 1e-9) continue; /* whole gens only */
        double x = px(p, ticks[i]);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x,
                p->top + PANEL_H, x, p->top + PANEL_H + 5);
        fprintf(f,
                "<text class=\"xtick\" x=\"%.2f\" y=\"%.1f\" font-size=\"11\" "
                "text-anchor=\"middle\">%.0f</text>\n",
                x, p->top + PANEL_H + 18, ticks[i]);
    }
    fprintf(f,
            "<text x=\"%d\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">generation"
            "</text>\n",
            LEFT + PLOT_W / 2, p->top + PANEL_H + 34);
    fprintf(f,
            "<text x=\"%d\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 %d %.1f)\">",
            LEFT - 52, p->top + PANEL_H / 2.0, LEFT - 52, p->top + PANEL_H / 2.0);
    xml_text(f, ylabel);
    fprintf(f, "</text>\n");
}

static void polyline(FILE *f, const panel *p, const plot_data *d, const double *y, int stride,
                     int off, const char *series, const char *color, int dashed)
{
    fprintf(f, "<polyline class=\"series\" data-series=\"");
    xml_text(f, series);
    fprintf(f, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color,
            dashed ? " stroke-dasharray=\"6 3\"" : "");
    int first = 1;
    for (int g = 0; g < d->n_gen; g++) {
        double v = y[(size_t)g * stride + off];
        if (!isfinite(v)) continue;
        fprintf(f, "%s%.2f,%.2f", first ? "" : " ", px(p, d->generation[g]), py(p, v));
        first = 0;
    }
    fprintf(f, "\"/>\n");
}

static void legend_entry(FILE *f, double y, const char *color, const char *label, int band)
{
    if (band)
        fprintf(f,
                "<rect x=\"%d\" y=\"%.1f\" width=\"22\" height=\"10\" fill=\"%s\" "
                "fill-opacity=\"0.2\"/>\n",
                LEGEND_X, y - 5, color);
    fprintf(f,
            "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"2\"/>\n",
            LEGEND_X, y, LEGEND_X + 22, y, color);
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\">", LEGEND_X + 28, y + 4);
    xml_text(f, label);
    fprintf(f, "</text>\n");
}

static void score_panel(FILE *f, const plot_data *d, double top, const double *const ys[3],
                        const char *title, const char *ylabel, const char *prefix)
{
    panel p = {.top = top};
    p.x0 = d->generation[0];
    p.x1 = d->generation[d->n_gen - 1];
    if (!(p.x1 > p.x0)) {
        p.x0 -= 0.5;
        p.x1 += 0.5;
    }
    plot_range(ys[0], ys[1], ys[2], d->n_gen, &p.y0, &p.y1);
    axes(f, &p, title, ylabel);
    fprintf(f, "<g class=\"legend\">\n");
    for (int s = 0; s < 3; s++) {
        char name[64];
        snprintf(name, sizeof name, "%s:%s", prefix, series_key[s]);
        polyline(f, &p, d, ys[s], 1, 0, name, series_color[s], s == 2);
        legend_entry(f, top + 16 + 20 * s, series_color[s], series_name[s], 0);
    }
    fprintf(f, "</g>\n</g>\n");
}

static void alpha_panel(FILE *f, const plot_data *d, double top)
{
    int K = d->n_experts, G = d->n_gen;
    panel p = {.top = top};
    p.x0 = d->generation[0];
    p.x1 = d->generation[G - 1];
    if (!(p.x1 > p.x0)) {
        p.x0 -= 0.5;
        p.x1 += 0.5;
    }
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < G * K; i++) {
        double m = d->alpha_mean[i], s = d->alpha_std[i];
        if (!isfinite(m)) continue;
        if (!isfinite(s)) s = 0;
        if (m - s < lo) lo = m - s;
        if (m + s > hi) hi = m + s;
    }
    if (!isfinite(lo)) lo = 0, hi = 1;
    double pad = hi > lo ? 0.05 * (hi - lo) : 0.5;
    p.y0 = lo - pad;
    p.y1 = hi + pad;
    char title[160];
    if (d->n_matrices_averaged > 1)
        snprintf(title, sizeof title,
                 "mixing coefficients α: mean ± std per expert (per-layer α averaged over %d "
                 "matrices)",
                 d->n_matrices_averaged);
    else
        snprintf(title, sizeof title, "mixing coefficients α: mean ± std per expert");
    axes(f, &p, title, "α");
    for (int k = 0; k < K; k++) {
        const char *color = plot_expert_color(d->expert_names[k], k);
        fprintf(f, "<polygon class=\"band\" data-series=\"alpha_band:");
        xml_text(f, d->expert_names[k]);
        fprintf(f, "\" fill=\"%s\" fill-opacity=\"0.2\" stroke=\"none\" points=\"", color);
        int first = 1;
        for (int g = 0; g < G; g++) { /* upper edge left to right, lower edge back */
            double m = d->alpha_mean[(size_t)g * K + k], s = d->alpha_std[(size_t)g * K + k];
            if (!isfinite(m)) continue;
            fprintf(f, "%s%.2f,%.2f", first ? "" : " ", px(&p, d->generation[g]),
                    py(&p, m + (isfinite(s) ? s : 0)));
            first = 0;
        }
        for (int g = G - 1; g >= 0; g--) {
            double m = d->alpha_mean[(size_t)g * K + k], s = d->alpha_std[(size_t)g * K + k];
            if (!isfinite(m)) continue;
            fprintf(f, " %.2f,%.2f", px(&p, d->generation[g]), py(&p, m - (isfinite(s) ? s : 0)));
        }
        fprintf(f, "\"/>\n");
        char name[200];
        snprintf(name, sizeof name, "alpha:%s", d->expert_names[k]);
        polyline(f, &p, d, d->alpha_mean, K, k, name, color, 0);
    }
    fprintf(f, "<g class=\"legend\">\n");
    for (int k = 0; k < K; k++) {
        char label[200];
        snprintf(label, sizeof label, "%s (mean ± std)", d->expert_names[k]);
        legend_entry(f, top + 16 + 20 * k, plot_expert_color(d->expert_names[k], k), label, 1);
    }
    fprintf(f, "</g>\n</g>\n");
}

int plot_svg_write(FILE *f, const plot_data *d)
{
    if (d->n_gen < 1 || d->n_experts < 0) return -1;
    int panels = d->n_experts > 0 ? 3 : 2;
    int legend_rows = d->n_experts > 10 ? d->n_experts - 10 : 0; /* long expert lists grow */
    int height = TITLE_H + panels * (PANEL_H + GAP) + 20 * legend_rows + 10;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n",
            WIDTH, height, WIDTH, height);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<title>");
    xml_text(f, d->title ? d->title : "zmix CEM convergence");
    fprintf(f, "</title>\n<text x=\"%d\" y=\"28\" font-size=\"18\" font-weight=\"bold\">", LEFT);
    xml_text(f, d->title ? d->title : "zmix CEM convergence");
    fprintf(f, "</text>\n");
    const double *acc[3] = {d->best_acc, d->elite_acc, d->pop_acc};
    const double *ll[3] = {d->best_ll, d->elite_ll, d->pop_ll};
    double top = TITLE_H + 24;
    score_panel(f, d, top, acc,
                d->choice ? "task accuracy (multiple choice) per generation"
                          : "task accuracy (exact match) per generation",
                "accuracy", "accuracy");
    top += PANEL_H + GAP;
    if (d->choice)
        score_panel(f, d, top, ll, "mean margin of the answer over the best other choice", "margin",
                    "margin");
    else
        score_panel(f, d, top, ll, "mean target log-likelihood per generation", "log-likelihood",
                    "loglik");
    top += PANEL_H + GAP;
    if (d->n_experts > 0) alpha_panel(f, d, top);
    fprintf(f, "</svg>\n");
    return ferror(f) ? -1 : 0;
}
