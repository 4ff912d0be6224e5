#include "daemon/tenants.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TENANTS_FILE_MAX (1 << 20)

int tenant_token_equal(const char *expected, size_t expected_len, const char *given,
                       size_t given_len)
{
    /* The length difference is folded in rather than returned early, and every byte of the
     * expected token is compared. */
    unsigned diff = (unsigned)(expected_len ^ given_len);
    for (size_t i = 0; i < expected_len; i++) {
        unsigned char b = i < given_len ? (unsigned char)given[i] : 0;
        diff |= (unsigned)((unsigned char)expected[i] ^ b);
    }
    return diff == 0;
}

const tenant *tenants_match(const tenant_table *t, const char *token, size_t len)
{
    const tenant *found = NULL;
    for (int i = 0; t && i < t->n; i++) {
        int eq = tenant_token_equal(t->v[i].token, t->v[i].token_len, token, len);
        if (eq && !found) found = &t->v[i];
    }
    return found;
}

void tenants_free(tenant_table *t)
{
    if (!t) return;
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

/* The next whitespace-separated word of line at *pos, NUL-terminated in place; NULL at the
 * end. */
static char *next_word(char *line, size_t *pos)
{
    size_t i = *pos;
    while (line[i] && isspace((unsigned char)line[i])) i++;
    if (!line[i]) return NULL;
    char *w = line + i;
    while (line[i] && !isspace((unsigned char)line[i])) i++;
    if (line[i]) line[i++] = '\0';
    *pos = i;
    return w;
}

static int parse_limit(const char *word, const char *key, int *out)
{
    size_t n = strlen(key);
    if (strncmp(word, key, n) || word[n] != '=') return 0;
    char *end;
    errno = 0;
    long v = strtol(word + n + 1, &end, 10);
    if (errno || end == word + n + 1 || *end || v < 0 || v > 1000000) return -1;
    *out = (int)v;
    return 1;
}

static int parse_line(char *line, const char *path, int lineno, tenant *t, zmix_error *err)
{
    size_t pos = 0;
    char *name = next_word(line, &pos);
    char *token = name ? next_word(line, &pos) : NULL;
    if (!token)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "tenants file %s:%d: expected 'NAME TOKEN [max_running=N] "
                              "[max_queued=N]'",
                              path, lineno);
    zmix_error name_err;
    if (tenant_name_check(name, &name_err))
        return zmix_error_set(err, ZMIX_EINVAL, "tenants file %s:%d: %s", path, lineno,
                              name_err.msg);
    size_t tl = strlen(token);
    if (tl < TENANT_TOKEN_MIN || tl > TENANT_TOKEN_MAX)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "tenants file %s:%d: tenant %s: token of %zu bytes, %d to %d "
                              "required",
                              path, lineno, name, tl, TENANT_TOKEN_MIN, TENANT_TOKEN_MAX);
    for (size_t i = 0; i < tl; i++)
        if (token[i] < 0x21 || token[i] > 0x7e)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "tenants file %s:%d: tenant %s: the token has a byte that is "
                                  "not printable ASCII at %zu",
                                  path, lineno, name, i);
    snprintf(t->name, sizeof t->name, "%s", name);
    memcpy(t->token, token, tl + 1);
    t->token_len = tl;
    for (char *w; (w = next_word(line, &pos));) {
        int r = parse_limit(w, "max_running", &t->max_running);
        if (r == 0) r = parse_limit(w, "max_queued", &t->max_queued);
        if (r != 1) {
            char shown[40];
            snprintf(shown, sizeof shown, "%.32s", w);
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "tenants file %s:%d: tenant %s: '%s' is not max_running=N or "
                                  "max_queued=N (N from 0 to 1000000)",
                                  path, lineno, name, shown);
        }
    }
    return 0;
}

int tenants_parse(const char *text, size_t len, const char *path, int default_max_running,
                  int default_max_queued, tenant_table *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    char *buf = malloc(len + 1);
    if (!buf) return zmix_error_set(err, ZMIX_ENOMEM, "tenants file %s: out of memory", path);
    memcpy(buf, text, len);
    buf[len] = '\0';
    int rc = 0, lineno = 0, cap = 0;
    if (memchr(text, '\0', len))
        rc = zmix_error_set(err, ZMIX_EINVAL, "tenants file %s: contains a NUL byte", path);
    for (char *line = buf, *next; line && !rc; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        size_t i = 0;
        while (line[i] && isspace((unsigned char)line[i])) i++;
        if (!line[i]) continue; /* blank or comment */
        if (out->n == cap) {
            cap = cap ? 2 * cap : 8;
            tenant *v = realloc(out->v, (size_t)cap * sizeof *v);
            if (!v) {
                rc = zmix_error_set(err, ZMIX_ENOMEM, "tenants file %s: out of memory", path);
                break;
            }
            out->v = v;
        }
        tenant *t = &out->v[out->n];
        memset(t, 0, sizeof *t);
        t->max_running = default_max_running;
        t->max_queued = default_max_queued;
        rc = parse_line(line, path, lineno, t, err);
        for (int k = 0; !rc && k < out->n; k++) {
            if (!strcmp(out->v[k].name, t->name))
                rc = zmix_error_set(err, ZMIX_EINVAL, "tenants file %s:%d: tenant %s listed twice",
                                    path, lineno, t->name);
            else if (out->v[k].token_len == t->token_len &&
                     !memcmp(out->v[k].token, t->token, t->token_len))
                rc = zmix_error_set(err, ZMIX_EINVAL,
                                    "tenants file %s:%d: tenant %s has the token of tenant %s",
                                    path, lineno, t->name, out->v[k].name);
        }
        if (!rc) out->n++;
    }
    if (!rc && out->n == 0)
        rc = zmix_error_set(err, ZMIX_EINVAL, "tenants file %s: no tenant in it", path);
    memset(buf, 0, len); /* tokens */
    free(buf);
    if (rc) tenants_free(out);
    return rc;
}

int tenants_load(const char *path, int default_max_running, int default_max_queued,
                 tenant_table *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return zmix_error_set(err, ZMIX_EIO, "tenants file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return zmix_error_set(err, ZMIX_EINVAL, "tenants file %s: not a regular file", path);
    }
    if (st.st_mode & 077) {
        fclose(f);
        return zmix_error_set(err, ZMIX_EAUTH,
                              "tenants file %s holds tokens but has mode %03o (group or others "
                              "may read or write it): chmod 600 %s",
                              path, (unsigned)(st.st_mode & 0777), path);
    }
    if (st.st_size > TENANTS_FILE_MAX) {
        fclose(f);
        return zmix_error_set(err, ZMIX_ELIMIT, "tenants file %s: %lld bytes, at most %d", path,
                              (long long)st.st_size, TENANTS_FILE_MAX);
    }
    size_t len = (size_t)st.st_size;
    char *text = malloc(len + 1);
    if (!text) {
        fclose(f);
        return zmix_error_set(err, ZMIX_ENOMEM, "tenants file %s: out of memory", path);
    }
    size_t got = fread(text, 1, len, f);
    fclose(f);
    int rc = got != len ? zmix_error_set(err, ZMIX_EIO, "tenants file %s: short read", path)
                        : tenants_parse(text, len, path, default_max_running, default_max_queued,
                                        out, err);
    memset(text, 0, len);
    free(text);
    return rc;
}
