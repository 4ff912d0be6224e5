/*
 * The generate method (proto/PROTOCOL.md, "generate"): a continuation of a prompt with the
 * base model or a cached task's adaptation, for a tenant to try its adaptation.
 *
 * A request goes through three stages:
 *   1. loop: params parsed and checked (wire/gen_request.c); the request is parked on its
 *      connection;
 *   2. libuv's threadpool: the task's result read from the cache and checked against the
 *      daemon's model and matrices, and the generator made (W' composed once) and started;
 *   3. the scoring pool, one token per item: each generation has a pool queue of its own at
 *      GEN_PRIORITY, below every job's priority, so a free worker always takes an adaptation
 *      job's piece first and a job waits for at most one generation step (the prompt's, for
 *      the first). Between steps, on the loop, a generation whose client went away (the
 *      parked request lost its connection) or a daemon shutting down ends it.
 * Thread: the loop, except where marked.
 */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/server.h"
#include "wire/gen_request.h"
#include "zmix/generate.h"

/* Below any job's priority (jobs: -10..10). */
#define GEN_PRIORITY (-1000)

typedef struct gen_op {
    io_op base;     /* stage 2 */
    pool_item item; /* stage 3: one step at a time */
    pool_queue queue;
    parked *p;
    gen_request req;
    zmix_generator *g;
    int rc;
    zmix_error err;
    int32_t *tokens; /* req.opts.max_tokens */
    int n_tokens;
    int32_t token; /* the step's token, or -1 */
    zmix_gen_finish finish;
} gen_op;

static void gen_free(server *srv, gen_op *op)
{
    srv->n_generating--;
    zmix_generator_free(op->g);
    gen_request_free(&op->req);
    free(op->tokens);
    free(op->p);
    free(op);
}

/* The z' of a cached task in the runtime's matrix order, with its rescale, after checking it
 * was made for this daemon's model (fingerprint) and matrices. Threadpool. */
static int task_z(server *srv, const char *task, float **z, int *rescale, zmix_error *err)
{
    task_result r;
    int rc = task_cache_get(srv->cache, task, &r, err);
    if (rc) return rc;
    const zmix_runtime *rt = srv->rt;
    int M = zmix_runtime_n_matrices(rt);
    zmix_adapt_result res;
    memset(&res, 0, sizeof res);
    cJSON *doc =
        r.document_len ? cJSON_ParseWithLength((const char *)r.document, r.document_len) : NULL;
    if (!doc)
        rc = zmix_error_set(err, ZMIX_ESTATE,
                            "task %s has no result document (made by an older daemon): submit "
                            "it again with recompute",
                            task);
    else if (!(rc = zmix_adapt_result_from_json(doc, &res, err)) &&
             strcmp(res.model_fingerprint, zmix_model_fingerprint(srv->model)))
        rc = zmix_error_set(err, ZMIX_ESTATE,
                            "task %s was made for another base model (fingerprint %.16s…, this "
                            "daemon's is %.16s…)",
                            task, res.model_fingerprint, zmix_model_fingerprint(srv->model));
    cJSON_Delete(doc);
    if (!rc && (r.n_matrices != M || !r.z))
        rc = zmix_error_set(err, ZMIX_ESTATE,
                            "task %s adapts %d matrices, this daemon's runtime %d: made with "
                            "another adapted set",
                            task, r.n_matrices, M);
    for (int m = 0; !rc && m < M; m++)
        if (strcmp(r.matrix_names[m], zmix_runtime_matrix_name(rt, m)) ||
            (int)r.ranks[m] != zmix_runtime_matrix_rank(rt, m))
            rc = zmix_error_set(err, ZMIX_ESTATE,
                                "task %s: matrix %d is %s of rank %u, this daemon's is %s of "
                                "rank %d",
                                task, m, r.matrix_names[m], r.ranks[m],
                                zmix_runtime_matrix_name(rt, m), zmix_runtime_matrix_rank(rt, m));
    if (!rc) {
        size_t zt = zmix_runtime_z_total(rt);
        if (!(*z = malloc((zt ? zt : 1) * sizeof **z)))
            rc = zmix_error_set(err, ZMIX_ENOMEM, "out of memory for task %s's z'", task);
        else
            memcpy(*z, r.z, zt * sizeof **z);
        *rescale = res.rescale;
    }
    zmix_adapt_result_free(&res);
    task_result_free(&r);
    return rc;
}

static void prepare_work(io_op *o) /* threadpool */
{
    gen_op *op = (gen_op *)o;
    server *srv = o->srv;
    float *z = NULL;
    int rescale = 0;
    if (op->req.has_task && (op->rc = task_z(srv, op->req.task, &z, &rescale, &op->err))) return;
    op->rc = zmix_generator_create(srv->model, srv->rt, rescale, z, &op->g, &op->err);
    free(z);
    if (!op->rc)
        op->rc =
            zmix_generator_start(op->g, op->req.prompt, op->req.n_prompt, &op->req.opts, &op->err);
}

static void step_run(pool_item *it) /* pool worker */
{
    gen_op *op = it->owner;
    /* No stop flag: a client gone is noticed between steps, which are short. */
    it->rc = zmix_generator_step(op->g, &op->token, &op->finish, NULL, &it->err);
}

static void reply_generated(gen_op *op)
{
    rpc_map m; /* collects the entries; packed into sb at the end */
    rpc_map_begin(&m);
    msgpack_packer *list = rpc_map_key(&m, "tokens");
    msgpack_pack_array(list, (size_t)op->n_tokens);
    for (int i = 0; i < op->n_tokens; i++) msgpack_pack_int32(list, op->tokens[i]);
    char *text = zmix_generation_text(op->base.srv->model, op->tokens, op->n_tokens);
    if (text)
        rpc_map_str(&m, "text", text);
    else
        rpc_map_nil(&m, "text");
    free(text);
    rpc_map_str(&m, "finish_reason", zmix_gen_finish_name(op->finish));
    int32_t stop = zmix_generator_stop_token(op->g);
    if (stop >= 0)
        rpc_map_int(&m, "stop_token", stop);
    else
        rpc_map_nil(&m, "stop_token");
    rpc_map_int(&m, "prompt_tokens", op->req.n_prompt);
    if (op->req.has_task)
        jobs_pack_task_name(&m, op->req.task);
    else
        rpc_map_nil(&m, "task");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rpc_map_end(&m, &pk);
    parked_reply_result(op->p, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* Queues the next step, unless the client went away or the daemon is stopping. */
static void next_step(server *srv, gen_op *op)
{
    if (!op->p->conn)
        ZLOG_INFO(srv->log, "generate: the client went away after %d tokens: stopped",
                  op->n_tokens);
    if (!op->p->conn || srv->shutting_down) {
        if (op->p->conn)
            parked_reply_error(op->p, ZMIX_ECANCELED, "generate: the daemon is shutting down");
        gen_free(srv, op);
        return;
    }
    memset(&op->item, 0, sizeof op->item);
    op->item.run = step_run;
    op->item.owner = op;
    op->item.kind = POOL_KIND_GENERATE;
    pool_submit(srv->pool, &op->queue, &op->item);
}

static void prepare_after(io_op *o)
{
    gen_op *op = (gen_op *)o;
    server *srv = o->srv;
    if (op->rc) {
        char msg[ZMIX_ERROR_MSG_MAX + 16];
        snprintf(msg, sizeof msg, "generate: %s", op->err.msg);
        parked_reply_error(op->p, op->rc, msg);
        gen_free(srv, op);
        return;
    }
    next_step(srv, op);
}

void generate_step_done(server *srv, pool_item *it)
{
    gen_op *op = it->owner;
    if (it->rc) {
        char msg[ZMIX_ERROR_MSG_MAX + 16];
        snprintf(msg, sizeof msg, "generate: %s", it->err.msg);
        parked_reply_error(op->p, it->rc, msg); /* dropped when the client is gone */
        gen_free(srv, op);
        return;
    }
    if (op->token >= 0) op->tokens[op->n_tokens++] = op->token;
    if (op->finish == ZMIX_GEN_RUNNING) {
        next_step(srv, op);
        return;
    }
    reply_generated(op);
    gen_free(srv, op);
}

void generate_request(server *srv, conn *c, const rpc_request *req)
{
    /* Each generation holds a copy of the adapted matrices (W') and a KV cache, and uses one
     * worker at a time: more at once than there are workers would only add memory. */
    int most = pool_workers(srv->pool);
    if (srv->n_generating >= most) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "generate: %d generations already running (at most %d, one per worker); try "
                 "again when one ends",
                 srv->n_generating, most);
        conn_reply_error(c, req->msgid, ZMIX_ELIMIT, msg);
        return;
    }
    gen_op *op = calloc(1, sizeof *op);
    parked *p = op ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        free(op);
        conn_reply_error(c, req->msgid, ZMIX_ENOMEM, "generate: out of memory");
        return;
    }
    srv->n_generating++;
    op->p = p;
    /* Unknown fields first, worded as every method words them ("generate: unknown field"). */
    int rc = rpc_map_check_keys(&req->params, gen_request_keys, "generate", &op->err);
    if (rc) {
        conn_reply_error(c, req->msgid, rc, op->err.msg);
        gen_free(srv, op);
        return;
    }
    rc = gen_request_parse(&req->params, &srv->limits, &op->req, &op->err);
    if (!rc && op->req.has_task) rc = conn_scope_task(c, op->req.task, &op->err);
    if (!rc && !(op->tokens = malloc((size_t)op->req.opts.max_tokens * sizeof *op->tokens)))
        rc = zmix_error_set(&op->err, ZMIX_ENOMEM, "out of memory");
    if (rc) {
        char msg[ZMIX_ERROR_MSG_MAX + 16];
        snprintf(msg, sizeof msg, "generate: %s", op->err.msg);
        conn_reply_error(c, req->msgid, rc, msg);
        gen_free(srv, op);
        return;
    }
    pool_queue_init(&op->queue, GEN_PRIORITY);
    p->msgid = req->msgid;
    p->kind = PARK_IO;
    conn_park(c, p);
    op->base.work = prepare_work;
    op->base.after = prepare_after;
    io_submit(srv, &op->base);
}
