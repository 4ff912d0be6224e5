#include "progress.h"

#include <math.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

double progress_evals_per_s(const zmix_client_status *s)
{
    return s->elapsed > 0 ? (double)s->evaluations / s->elapsed : 0.0;
}

static void format_best(char *buf, size_t cap, const zmix_client_status *s, int ll_digits,
                        const char *second)
{
    if (s->has_best)
        snprintf(buf, cap, "best acc %.4f %s %.*f", s->best.accuracy, second ? second : "loglik",
                 ll_digits, s->best.loglik);
    else
        snprintf(buf, cap, "best -");
}

void progress_format_bar(char *buf, size_t cap, const zmix_client_status *s, int width,
                         const char *second)
{
    /* Every field has a fixed width for the job (the generation as wide as the last one, a
     * missing best as wide as a present one, the rate in 6 columns), so the bar keeps its
     * width from the first generation to the last. */
    char best[96], tail[200];
    const char *label = second ? second : "loglik";
    if (s->has_best) {
        snprintf(best, sizeof best, "best acc %.4f %s %8.4f", s->best.accuracy, label,
                 s->best.loglik);
    } else {
        int present = snprintf(NULL, 0, "best acc %.4f %s %8.4f", 0.0, label, 0.0);
        snprintf(best, sizeof best, "%-*s", present, "best -");
    }
    int gen_digits = snprintf(NULL, 0, "%d", s->max_generations);
    snprintf(tail, sizeof tail, "  %*d/%d  %s  %6.0f eval/s", gen_digits, s->generation,
             s->max_generations, best, progress_evals_per_s(s));
    int tail_len = (int)strlen(tail);
    int bar = width - tail_len - 3; /* "[" + "]" + a spare column so the cursor never wraps */
    if (bar > 40) bar = 40;
    if (bar < 5) { /* too narrow for a bar: the numbers alone, cut to the width */
        int w = width > 1 ? width - 1 : 1;
        snprintf(buf, cap, "%.*s", w, tail + 2);
        return;
    }
    int filled = 0;
    if (s->max_generations > 0) {
        int g = s->generation < s->max_generations ? s->generation : s->max_generations;
        filled = (int)((long)bar * g / s->max_generations);
    }
    if (zmix_client_state_is_final(s->state) && !strcmp(s->state, "done")) filled = bar;
    char bars[48];
    for (int i = 0; i < bar; i++) bars[i] = i < filled ? '#' : '.';
    bars[bar] = '\0';
    snprintf(buf, cap, "[%s]%s", bars, tail);
}

void progress_format_line(char *buf, size_t cap, const zmix_client_status *s, const char *second)
{
    char best[96];
    format_best(best, sizeof best, s, 5, second);
    snprintf(buf, cap, "job %llu: generation %d/%d: %s, %.0f eval/s", (unsigned long long)s->job,
             s->generation, s->max_generations, best, progress_evals_per_s(s));
}

void progress_init(progress *p, FILE *out, uint64_t job)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->job = job;
    p->last_generation = -1;
    p->tty = isatty(fileno(out));
    p->width = 80;
    struct winsize ws;
    if (p->tty && ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) p->width = ws.ws_col;
}

void progress_update(progress *p, const zmix_client_status *s)
{
    if (s->job != p->job) return;
    char line[512];
    if (p->tty) {
        /* Redraw on every status (the eval rate moves even within a generation). */
        progress_format_bar(line, sizeof line, s, p->width, p->second);
        fprintf(p->out, "\r%s\033[K", line);
        p->drawn = 1;
    } else if (s->generation != p->last_generation && s->generation > 0) {
        progress_format_line(line, sizeof line, s, p->second);
        fprintf(p->out, "%s\n", line);
    }
    p->last_generation = s->generation;
    fflush(p->out);
}

void progress_finish(progress *p)
{
    if (p->drawn) fputc('\n', p->out);
    p->drawn = 0;
    fflush(p->out);
}
