#include "task_result.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

int task_result_from_daemon(zmix_client *c, const zmix_client_result *r, zmix_adapt_result *out,
                            zmix_error *err)
{
    memset(out, 0, sizeof *out);
    char *json = NULL;
    int rc = zmix_client_get_document(c, r->task, &json, err);
    if (rc) return rc;
    zmix_adapt_result res;
    memset(&res, 0, sizeof res);
    cJSON *doc = cJSON_Parse(json);
    free(json);
    rc = doc ? zmix_adapt_result_from_json(doc, &res, err)
             : zmix_error_set(err, ZMIX_EFORMAT, "task %s: the result document is not JSON",
                              r->task);
    cJSON_Delete(doc);
    if (rc) return rc;
    /* z' comes with the get reply: it must list the document's matrices, in its order. */
    size_t total = 0;
    int same = res.n_matrices == r->n_matrices;
    for (int m = 0; same && m < r->n_matrices; m++) {
        same = !strcmp(res.matrix_names[m], r->matrices[m].name) &&
               res.matrix_ranks[m] == (int)r->matrices[m].rank && r->matrices[m].z;
        total += r->matrices[m].rank;
    }
    if (!same)
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "task %s: the z' vectors and the result document list different "
                            "matrices",
                            r->task);
    free(res.z);
    res.z = rc ? NULL : malloc((total ? total : 1) * sizeof *res.z);
    if (!rc && !res.z) rc = zmix_error_set(err, ZMIX_ENOMEM, "out of memory for z'");
    size_t off = 0;
    for (int m = 0; !rc && m < r->n_matrices; m++) {
        memcpy(res.z + off, r->matrices[m].z, r->matrices[m].rank * sizeof(float));
        off += r->matrices[m].rank;
    }
    res.z_total = total;
    if (rc) {
        zmix_adapt_result_free(&res);
        return rc;
    }
    *out = res;
    return 0;
}
