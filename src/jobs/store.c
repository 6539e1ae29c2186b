/*
 * store.c - the Batch API's state in Redis (see jobs.h for the data
 * model): a small pool of blocking hiredis connections, the file and batch
 * objects, and the two Lua scripts that change a batch's counts and status
 * atomically (a request's result; a cancel), both ending in the same
 * finalize step when the batch's last request has its result.
 */
#define _GNU_SOURCE /* getrandom */
#include "jobs/jobs.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/hash.h"
#include "cache/redis_url.h"
#include "json/json.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define POOL 8 /* idle connections kept */
#define STREAM "autoglm:jobs"
#define GROUP "autoglm"
#define IDEM_TTL_S 86400

struct ag_jobs {
    ag_redis_url url;
    uint64_t timeout_ms;
    pthread_mutex_t mu;
    redisContext *idle[POOL];
    int n_idle;
};

ag_status ag_jobs_open(const ag_jobs_opts *o, ag_jobs **out, ag_err *err) {
    ag_jobs *j = ag_xcalloc(1, sizeof *j);
    if (!ag_redis_url_parse(o->url, "--redis-url", &j->url, err->msg, sizeof err->msg)) {
        free(j);
        return AG_EINVAL;
    }
    j->timeout_ms = o->timeout_ms ? o->timeout_ms : 2000;
    pthread_mutex_init(&j->mu, NULL);
    *out = j;
    return AG_OK;
}

void ag_jobs_close(ag_jobs *j) {
    if (!j) return;
    for (int i = 0; i < j->n_idle; i++) redisFree(j->idle[i]);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

/* ---- connections and commands ------------------------------------------------------------ */

static ag_status reply_error(redisContext *c, redisReply *r, ag_err *err) {
    if (!r) return ag_err_set(err, AG_EIO, "redis: %s", c->errstr[0] ? c->errstr : "no reply");
    ag_err_set(err, AG_EIO, "redis: %.200s", r->str ? r->str : "error");
    freeReplyObject(r);
    return AG_EIO;
}

/* A command's reply, or NULL with err (an error reply is freed and reported). */
static redisReply *cmd(redisContext *c, ag_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        reply_error(c, r, err);
        return NULL;
    }
    return r;
}

/* The consumer group (and its stream), made by whoever comes first: every new connection, and a claim that
 * finds it gone (a Redis that lost its data). */
static bool make_group(redisContext *c, ag_err *err) {
    redisReply *r = redisCommand(c, "XGROUP CREATE " STREAM " " GROUP " 0 MKSTREAM");
    bool ok = r && (r->type != REDIS_REPLY_ERROR || strncmp(r->str, "BUSYGROUP", 9) == 0);
    if (!ok) reply_error(c, r, err), r = NULL;
    if (r) freeReplyObject(r);
    return ok;
}

static redisContext *conn_get(ag_jobs *j, ag_err *err) {
    pthread_mutex_lock(&j->mu);
    redisContext *c = j->n_idle ? j->idle[--j->n_idle] : NULL;
    pthread_mutex_unlock(&j->mu);
    if (c) return c;
    struct timeval tv = {(time_t)(j->timeout_ms / 1000), (suseconds_t)(j->timeout_ms % 1000) * 1000};
    c = redisConnectWithTimeout(j->url.host, j->url.port, tv);
    if (!c || c->err) {
        ag_err_set(err, AG_EIO, "redis at %s:%d: %s", j->url.host, j->url.port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    bool ok = true;
    if (j->url.user[0]) ok = (r = cmd(c, err, "AUTH %s %s", j->url.user, j->url.password)) != NULL;
    else if (j->url.password[0]) ok = (r = cmd(c, err, "AUTH %s", j->url.password)) != NULL;
    if (r) freeReplyObject(r), r = NULL;
    if (ok && j->url.db) ok = (r = cmd(c, err, "SELECT %d", j->url.db)) != NULL;
    if (r) freeReplyObject(r), r = NULL;
    if (ok) ok = make_group(c, err);
    if (!ok) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static void conn_put(ag_jobs *j, redisContext *c) {
    if (!c) return;
    if (c->err) { /* a timeout or a dropped connection: its replies cannot be trusted to line up */
        redisFree(c);
        return;
    }
    pthread_mutex_lock(&j->mu);
    if (j->n_idle < POOL) j->idle[j->n_idle++] = c, c = NULL;
    pthread_mutex_unlock(&j->mu);
    if (c) redisFree(c);
}

static void new_id(const char *prefix, char out[AG_JOBS_ID_LEN]) {
    unsigned char r[12];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) { /* never on Linux for 12 bytes; a clock-hash fallback */
        uint64_t h = ag_hash_bytes(r, sizeof r, ag_clock_mono_ns());
        memcpy(r, &h, 8);
    }
    int n = snprintf(out, AG_JOBS_ID_LEN, "%s", prefix);
    for (size_t i = 0; i < sizeof r; i++) n += snprintf(out + n, (size_t)(AG_JOBS_ID_LEN - n), "%02x", r[i]);
}

static int64_t now_ms(void) { return (int64_t)(ag_clock_wall_ns() / 1000000ull); }

void ag_jobs_tenant(ag_str key, char out[24]) {
    if (!key.n) {
        snprintf(out, 24, "public");
        return;
    }
    snprintf(out, 24, "k%016llx", (unsigned long long)ag_hash_bytes(key.p, key.n, 0x6a6f62732d6b6579ull));
}

/* ---- objects ---------------------------------------------------------------------------- */

const char *ag_jobs_obj_get(const ag_jobs_obj *o, const char *name) {
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->name[i], name) == 0) return o->value[i];
    return NULL;
}

void ag_jobs_obj_free(ag_jobs_obj *o) {
    for (size_t i = 0; i < o->n; i++) free(o->name[i]), free(o->value[i]);
    o->n = 0;
}

/* An HGETALL reply into out; false when it is empty (no such key). */
static bool obj_from(const redisReply *r, ag_jobs_obj *out) {
    out->n = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || !r->elements) return false;
    for (size_t i = 0; i + 1 < r->elements && out->n < AG_JOBS_MAX_FIELDS; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        out->name[out->n] = ag_xstrndup(k->str, (size_t)k->len);
        out->value[out->n++] = ag_xstrndup(v->str, (size_t)v->len);
    }
    return true;
}

/* The object at key if it is tenant's: AG_ENOTFOUND otherwise (another tenant's reads as absent). */
static ag_status obj_get(redisContext *c, const char *key, const char *tenant, ag_jobs_obj *out, ag_err *err) {
    redisReply *r = cmd(c, err, "HGETALL %s", key);
    if (!r) return AG_EIO;
    bool found = obj_from(r, out);
    freeReplyObject(r);
    const char *t = found ? ag_jobs_obj_get(out, "tenant") : NULL;
    if (!t || strcmp(t, tenant) != 0) {
        ag_jobs_obj_free(out);
        return ag_err_set(err, AG_ENOTFOUND, "not found");
    }
    return AG_OK;
}

/* AG_OK when the object at key exists and is the tenant's, else AG_ENOTFOUND (or AG_EIO). */
static ag_status owned(redisContext *c, const char *key, const char *tenant, ag_err *err) {
    ag_jobs_obj o;
    ag_status st = obj_get(c, key, tenant, &o, err);
    if (st == AG_OK) ag_jobs_obj_free(&o);
    return st;
}

/* A connection, and the key of the object of that kind and id ("file", "batch"); NULL with err. */
static redisContext *conn_for(ag_jobs *j, const char *kind, const char *id, char key[96], ag_err *err) {
    snprintf(key, 96, "autoglm:%s:%s", kind, id);
    return conn_get(j, err);
}

/* The tenant's object of that kind and id, on a connection of its own. */
static ag_status get_obj(ag_jobs *j, const char *kind, const char *tenant, const char *id, ag_jobs_obj *out,
                         ag_err *err) {
    char key[96];
    redisContext *c = conn_for(j, kind, id, key, err);
    if (!c) return AG_EIO;
    ag_status st = obj_get(c, key, tenant, out, err);
    conn_put(j, c);
    return st;
}

/*
 * An Idempotency-Key's claim for the new object id of that kind: *replayed
 * false to go on creating it; true when the key was used before, with *out
 * the object it created then (AG_AGAIN while that one is still being made).
 */
static ag_status idem_claim(redisContext *c, const char *tenant, const char *kind, const char *key, const char *id,
                            ag_jobs_obj *out, bool *replayed, ag_err *err) {
    *replayed = false;
    if (!key) return AG_OK;
    redisReply *r = cmd(c, err, "SET autoglm:idem:%s:%s:%s %s NX EX %d", tenant, kind, key, id, IDEM_TTL_S);
    if (!r) return AG_EIO;
    bool fresh = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (fresh) return AG_OK;
    *replayed = true;
    if (!(r = cmd(c, err, "GET autoglm:idem:%s:%s:%s", tenant, kind, key))) return AG_EIO;
    char okey[96];
    snprintf(okey, sizeof okey, "autoglm:%s:%.*s", kind, r->type == REDIS_REPLY_STRING ? (int)r->len : 0, r->str ? r->str : "");
    freeReplyObject(r);
    ag_status st = obj_get(c, okey, tenant, out, err);
    if (st == AG_ENOTFOUND)
        st = ag_err_set(err, AG_AGAIN, "the first request with this Idempotency-Key is still making its %s", kind);
    return st;
}

/* Pipelined commands whose replies are all read (the last kept in *last when asked); false at the first error. */
static bool drain_replies(redisContext *c, size_t n, redisReply **last, ag_err *err) {
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            reply_error(c, NULL, err);
            return false; /* the connection is broken (c->err): conn_put drops it */
        }
        if (r->type == REDIS_REPLY_ERROR && ok) ok = false, reply_error(c, r, err), r = NULL;
        if (i + 1 == n && last && r) *last = r;
        else if (r) freeReplyObject(r);
    }
    return ok;
}

/* ---- files ------------------------------------------------------------------------------- */

ag_status ag_jobs_file_create(ag_jobs *j, const char *tenant, const char *idem_key, const char *filename,
                              const char *purpose, const char *data, size_t len, size_t lines, ag_jobs_obj *out,
                              bool *replayed, ag_err *err) {
    redisContext *c = conn_get(j, err);
    if (!c) return AG_EIO;
    char id[AG_JOBS_ID_LEN], key[96];
    new_id("file-", id);
    ag_status st = idem_claim(c, tenant, "file", idem_key, id, out, replayed, err);
    if (st != AG_OK || *replayed) goto done;
    int64_t ms = now_ms();
    snprintf(key, sizeof key, "autoglm:file:%s", id);
    redisAppendCommand(c, "MULTI");
    redisAppendCommand(c, "HSET %s id %s object file bytes %llu created_at %lld filename %s purpose %s status processed "
                          "tenant %s lines %llu",
                       key, id, (unsigned long long)len, (long long)(ms / 1000), filename, purpose, tenant,
                       (unsigned long long)lines);
    redisAppendCommand(c, "SET %s:data %b", key, data, len);
    redisAppendCommand(c, "ZADD autoglm:files:%s %lld %s", tenant, (long long)ms, id);
    redisAppendCommand(c, "EXEC");
    st = drain_replies(c, 5, NULL, err) ? obj_get(c, key, tenant, out, err) : AG_EIO;
done:
    conn_put(j, c);
    return st;
}

ag_status ag_jobs_file_get(ag_jobs *j, const char *tenant, const char *id, ag_jobs_obj *out, ag_err *err) {
    return get_obj(j, "file", tenant, id, out, err);
}

ag_status ag_jobs_file_content(ag_jobs *j, const char *tenant, const char *id, ag_buf *out, ag_err *err) {
    char key[96];
    redisContext *c = conn_for(j, "file", id, key, err);
    if (!c) return AG_EIO;
    ag_status st = owned(c, key, tenant, err);
    if (st == AG_OK) {
        redisReply *r = cmd(c, err, "GET %s:data", key);
        if (!r) st = AG_EIO;
        else if (r->type != REDIS_REPLY_STRING) st = ag_err_set(err, AG_ENOTFOUND, "not found");
        else ag_buf_append(out, r->str, (size_t)r->len);
        if (r) freeReplyObject(r);
    }
    conn_put(j, c);
    return st;
}

ag_status ag_jobs_file_delete(ag_jobs *j, const char *tenant, const char *id, ag_err *err) {
    char key[96];
    redisContext *c = conn_for(j, "file", id, key, err);
    if (!c) return AG_EIO;
    ag_status st = owned(c, key, tenant, err);
    if (st == AG_OK) {
        redisAppendCommand(c, "MULTI");
        redisAppendCommand(c, "DEL %s %s:data", key, key);
        redisAppendCommand(c, "ZREM autoglm:files:%s %s", tenant, id);
        redisAppendCommand(c, "EXEC");
        if (!drain_replies(c, 4, NULL, err)) st = AG_EIO;
    }
    conn_put(j, c);
    return st;
}

ag_status ag_jobs_list(ag_jobs *j, bool batches, const char *tenant, const char *after, size_t limit, bool desc,
                       ag_jobs_page *out, ag_err *err) {
    memset(out, 0, sizeof *out);
    redisContext *c = conn_get(j, err);
    if (!c) return AG_EIO;
    const char *kind = batches ? "batch" : "file";
    char index[96];
    snprintf(index, sizeof index, "autoglm:%s:%s", batches ? "batches" : "files", tenant);
    ag_status st = AG_OK;
    long long start = 0;
    redisReply *r;
    if (after) {
        if (!(r = cmd(c, err, "%s %s %s", desc ? "ZREVRANK" : "ZRANK", index, after))) {
            st = AG_EIO;
            goto done;
        }
        if (r->type == REDIS_REPLY_INTEGER) start = r->integer + 1;
        else st = ag_err_set(err, AG_ENOTFOUND, "after: no %s %.60s", kind, after);
        freeReplyObject(r);
        if (st != AG_OK) goto done;
    }
    if (!(r = cmd(c, err, "%s %s %lld %lld", desc ? "ZREVRANGE" : "ZRANGE", index, start, start + (long long)limit))) {
        st = AG_EIO;
        goto done;
    }
    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    out->has_more = n > limit;
    if (n > limit) n = limit;
    for (size_t i = 0; i < n; i++) redisAppendCommand(c, "HGETALL autoglm:%s:%s", kind, r->element[i]->str);
    freeReplyObject(r);
    out->items = ag_xcalloc(n ? n : 1, sizeof *out->items);
    for (size_t i = 0; i < n; i++) {
        redisReply *h = NULL;
        if (redisGetReply(c, (void **)&h) != REDIS_OK || !h) {
            st = reply_error(c, NULL, err);
            break;
        }
        if (obj_from(h, &out->items[out->n])) out->n++; /* one deleted meanwhile is left out */
        freeReplyObject(h);
    }
done:
    conn_put(j, c);
    return st;
}

void ag_jobs_page_free(ag_jobs_page *p) {
    for (size_t i = 0; i < p->n; i++) ag_jobs_obj_free(&p->items[i]);
    free(p->items);
    memset(p, 0, sizeof *p);
}

/* ---- batches ------------------------------------------------------------------------------ */

/*
 * The last step of a batch, inside a script: its results become the output
 * file (successes) and the error file (failures), and the status turns
 * completed, cancelled (it was cancelling) or expired (some request's window
 * had passed).  Output files' ids come from the batch's, so a finalize is
 * the same whoever runs it.
 */
static const char lua_finalize[] =
    "local function finalize(bkey, rkey, now_ms)\n"
    "  local b = redis.call('HMGET', bkey, 'id', 'tenant', 'status', 'expired')\n"
    "  local id, tenant, st = b[1], b[2], b[3]\n"
    "  local now = math.floor(now_ms / 1000)\n"
    "  redis.call('HSET', bkey, 'finalizing_at', now)\n"
    "  local res = redis.call('HGETALL', rkey)\n"
    "  local out, err = {}, {}\n"
    "  for i = 2, #res, 2 do\n"
    "    local v = res[i]\n"
    "    local k = string.sub(v, 1, 1)\n"
    "    if k == 'o' then out[#out + 1] = string.sub(v, 2) elseif k == 'e' then err[#err + 1] = string.sub(v, 2) end\n"
    "  end\n"
    "  local function file(lines, kind, tag)\n"
    "    if #lines == 0 then return end\n"
    "    local data = table.concat(lines, '\\n') .. '\\n'\n"
    "    local fid = 'file-' .. string.sub(id, 7) .. tag\n"
    "    redis.call('HSET', 'autoglm:file:' .. fid, 'id', fid, 'object', 'file', 'bytes', #data, 'created_at', now,\n"
    "      'filename', id .. '_' .. kind .. '.jsonl', 'purpose', 'batch_output', 'status', 'processed', 'tenant', tenant)\n"
    "    redis.call('SET', 'autoglm:file:' .. fid .. ':data', data)\n"
    "    redis.call('ZADD', 'autoglm:files:' .. tenant, now_ms, fid)\n"
    "    redis.call('HSET', bkey, kind .. '_file_id', fid)\n"
    "  end\n"
    "  file(out, 'output', 'o')\n"
    "  file(err, 'error', 'e')\n"
    "  local final = 'completed'\n"
    "  if st == 'cancelling' then final = 'cancelled' elseif b[4] then final = 'expired' end\n"
    "  redis.call('HSET', bkey, 'status', final, final .. '_at', now)\n"
    "end\n"
    "local function settled(bkey, rkey)\n"
    "  return redis.call('HLEN', rkey) >= tonumber(redis.call('HGET', bkey, 'total'))\n"
    "end\n";

/* KEYS batch, results, stream; ARGV group, entry, custom_id, value ("o..", "e..", "s"), now_ms, input tokens,
 * output tokens, "expired" or "" */
static const char lua_result[] =
    "local st = redis.call('HGET', KEYS[1], 'status')\n"
    "if st and redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) == 1 then\n"
    "  local k = string.sub(ARGV[4], 1, 1)\n"
    "  if k == 'o' then redis.call('HINCRBY', KEYS[1], 'completed', 1)\n"
    "  elseif k == 'e' then redis.call('HINCRBY', KEYS[1], 'failed', 1) end\n"
    "  redis.call('HINCRBY', KEYS[1], 'input_tokens', ARGV[6])\n"
    "  redis.call('HINCRBY', KEYS[1], 'output_tokens', ARGV[7])\n"
    "  if ARGV[8] == 'expired' then redis.call('HSET', KEYS[1], 'expired', '1') end\n"
    "end\n"
    "redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[3], ARGV[2])\n"
    "if (st == 'in_progress' or st == 'cancelling') and settled(KEYS[1], KEYS[2]) then finalize(KEYS[1], KEYS[2], tonumber(ARGV[5])) end\n"
    "return 1\n";

/* KEYS batch, results; ARGV tenant, now_ms.  Returns the status after, or false for another tenant's. */
static const char lua_cancel[] =
    "local b = redis.call('HMGET', KEYS[1], 'tenant', 'status')\n"
    "if b[1] ~= ARGV[1] then return false end\n"
    "if b[2] == 'in_progress' or b[2] == 'validating' then\n"
    "  redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', math.floor(tonumber(ARGV[2]) / 1000))\n"
    "  if settled(KEYS[1], KEYS[2]) then finalize(KEYS[1], KEYS[2], tonumber(ARGV[2])) end\n"
    "end\n"
    "return redis.call('HGET', KEYS[1], 'status')\n";

/* EVAL of a script with the finalize step before it. */
static redisReply *eval(redisContext *c, const char *script, int argc, const char **argv, const size_t *lens,
                        ag_err *err) {
    size_t sn = strlen(lua_finalize) + strlen(script);
    char *text = ag_xmalloc(sn + 1);
    snprintf(text, sn + 1, "%s%s", lua_finalize, script);
    const char *args[16];
    size_t arglens[16];
    args[0] = "EVAL", arglens[0] = 4;
    args[1] = text, arglens[1] = sn;
    for (int i = 0; i < argc && i < 14; i++) args[i + 2] = argv[i], arglens[i + 2] = lens ? lens[i] : strlen(argv[i]);
    redisReply *r = redisCommandArgv(c, argc + 2, args, arglens);
    free(text);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        reply_error(c, r, err);
        return NULL;
    }
    return r;
}

typedef struct create_ctx {
    redisContext *c;
    const char *endpoint, *batch;
    size_t appended;
    bool queue; /* false: the first pass, which only checks each line's url */
} create_ctx;

static ag_status create_line(void *p, const ag_jobs_line *l, ag_err *err) {
    create_ctx *cx = p;
    if (!ag_str_eq_cstr(l->url, cx->endpoint))
        return ag_err_set(err, AG_EINVAL, "line %zu: url %.*s differs from the batch's endpoint %s", l->lineno,
                          (int)(l->url.n > 64 ? 64 : l->url.n), l->url.p, cx->endpoint);
    if (!cx->queue) return AG_OK;
    redisAppendCommand(cx->c, "XADD " STREAM " * batch %s custom_id %b url %b body %b", cx->batch, l->custom_id.p,
                       l->custom_id.n, l->url.p, l->url.n, l->body, l->body_len);
    cx->appended++;
    return AG_OK;
}

ag_status ag_jobs_batch_create(ag_jobs *j, const char *tenant, const char *idem_key, const char *input_file_id,
                               const char *endpoint, uint64_t window_s, const char *metadata, ag_jobs_obj *out,
                               bool *replayed, ag_err *err) {
    redisContext *c = conn_get(j, err);
    if (!c) return AG_EIO;
    char id[AG_JOBS_ID_LEN], key[96], fkey[96];
    new_id("batch_", id);
    ag_buf data;
    ag_buf_init(&data);
    ag_status st = idem_claim(c, tenant, "batch", idem_key, id, out, replayed, err);
    if (st != AG_OK || *replayed) goto done;
    snprintf(fkey, sizeof fkey, "autoglm:file:%s", input_file_id);
    ag_jobs_obj f;
    if ((st = obj_get(c, fkey, tenant, &f, err)) != AG_OK) {
        if (st == AG_ENOTFOUND) ag_err_set(err, AG_ENOTFOUND, "No file with id '%.60s'.", input_file_id);
        goto done;
    }
    bool batch_file = strcmp(ag_jobs_obj_get(&f, "purpose") ? ag_jobs_obj_get(&f, "purpose") : "", "batch") == 0;
    ag_jobs_obj_free(&f);
    if (!batch_file) {
        st = ag_err_set(err, AG_EINVAL, "File '%.60s' was not uploaded with purpose 'batch'.", input_file_id);
        goto done;
    }
    redisReply *r = cmd(c, err, "GET %s:data", fkey);
    if (!r) {
        st = AG_EIO;
        goto done;
    }
    if (r->type == REDIS_REPLY_STRING) ag_buf_append(&data, r->str, (size_t)r->len);
    freeReplyObject(r);
    create_ctx cx = {c, endpoint, id, 0, false};
    size_t lines;
    if ((st = ag_jobs_input_check(data.data ? data.data : "", data.len, create_line, &cx, &lines, err)) != AG_OK) goto done;
    if (!lines) {
        st = ag_err_set(err, AG_EINVAL, "File '%.60s' holds no requests.", input_file_id);
        goto done;
    }
    int64_t ms = now_ms(), created = ms / 1000;
    snprintf(key, sizeof key, "autoglm:batch:%s", id);
    redisAppendCommand(c, "MULTI");
    redisAppendCommand(c, "HSET %s id %s object batch tenant %s endpoint %s input_file_id %s completion_window 24h "
                          "status in_progress created_at %lld in_progress_at %lld expires_at %lld total %llu "
                          "completed 0 failed 0 input_tokens 0 output_tokens 0",
                       key, id, tenant, endpoint, input_file_id, (long long)created, (long long)created,
                       (long long)(created + (int64_t)window_s), (unsigned long long)lines);
    if (metadata) redisAppendCommand(c, "HSET %s metadata %s", key, metadata);
    redisAppendCommand(c, "ZADD autoglm:batches:%s %lld %s", tenant, (long long)ms, id);
    cx.queue = true;
    if ((st = ag_jobs_input_check(data.data, data.len, create_line, &cx, &lines, err)) != AG_OK) {
        redisFree(c); /* commands half appended: this connection goes */
        c = NULL;
        goto done;
    }
    redisAppendCommand(c, "EXEC");
    redisReply *exec = NULL;
    if (!drain_replies(c, 4 + (metadata != NULL) + cx.appended, &exec, err)) st = AG_EIO;
    else if (!exec || exec->type != REDIS_REPLY_ARRAY) st = ag_err_set(err, AG_EIO, "redis: the batch's transaction failed");
    if (exec) freeReplyObject(exec);
    if (st == AG_OK) st = obj_get(c, key, tenant, out, err);
done:
    ag_buf_deinit(&data);
    conn_put(j, c);
    return st;
}

ag_status ag_jobs_batch_get(ag_jobs *j, const char *tenant, const char *id, ag_jobs_obj *out, ag_err *err) {
    return get_obj(j, "batch", tenant, id, out, err);
}

ag_status ag_jobs_batch_cancel(ag_jobs *j, const char *tenant, const char *id, ag_jobs_obj *out, ag_err *err) {
    char key[96], rkey[112], ms[24];
    redisContext *c = conn_for(j, "batch", id, key, err);
    if (!c) return AG_EIO;
    snprintf(rkey, sizeof rkey, "%s:res", key);
    snprintf(ms, sizeof ms, "%lld", (long long)now_ms());
    const char *argv[] = {"2", key, rkey, tenant, ms};
    redisReply *r = eval(c, lua_cancel, 5, argv, NULL, err);
    ag_status st = !r ? AG_EIO : r->type == REDIS_REPLY_STRING ? AG_OK : ag_err_set(err, AG_ENOTFOUND, "not found");
    if (r) freeReplyObject(r);
    if (st == AG_OK) st = obj_get(c, key, tenant, out, err);
    conn_put(j, c);
    return st;
}

/* ---- workers ------------------------------------------------------------------------------ */

void ag_jobs_task_free(ag_jobs_task *t) {
    free(t->custom_id), free(t->url), free(t->body);
    memset(t, 0, sizeof *t);
}

/* A result's value and line: "o"/"e" and the batch output line ({id, custom_id, response, error}). */
static void result_line(ag_buf *b, const char *custom_id, const ag_jobs_result *r, const char *code, const char *msg) {
    char id[AG_JOBS_ID_LEN];
    new_id("batch_req_", id);
    ag_buf_append_char(b, code || r->status != 200 ? 'e' : 'o');
    ag_buf_appendf(b, "{\"id\":\"%s\",\"custom_id\":", id);
    ag_buf_append_json_str(b, custom_id, strlen(custom_id), AG_UTF8_REPLACE);
    if (code) {
        ag_buf_append_str(b, ",\"response\":null,\"error\":{\"code\":");
        ag_buf_append_json_str(b, code, strlen(code), AG_UTF8_REPLACE);
        ag_buf_append_str(b, ",\"message\":");
        ag_buf_append_json_str(b, msg, strlen(msg), AG_UTF8_REPLACE);
        ag_buf_append_str(b, "}}");
        return;
    }
    ag_buf_appendf(b, ",\"response\":{\"status_code\":%d,\"request_id\":", r->status);
    ag_buf_append_json_str(b, r->request_id ? r->request_id : "", r->request_id ? strlen(r->request_id) : 0,
                           AG_UTF8_REPLACE);
    ag_buf_append_str(b, ",\"body\":");
    ag_buf_append(b, r->body, r->body_len);
    ag_buf_append_str(b, "},\"error\":null}");
}

/* Run the result script for an entry: value "s" (skipped), or a line; expired marks the batch. */
static ag_status settle(redisContext *c, const char *batch, const char *entry, const char *custom_id,
                        const char *value, size_t value_len, int64_t in_tok, int64_t out_tok, bool expired,
                        ag_err *err) {
    char key[96], rkey[112], ms[24], it[24], ot[24];
    snprintf(key, sizeof key, "autoglm:batch:%s", batch);
    snprintf(rkey, sizeof rkey, "%s:res", key);
    snprintf(ms, sizeof ms, "%lld", (long long)now_ms());
    snprintf(it, sizeof it, "%lld", (long long)in_tok);
    snprintf(ot, sizeof ot, "%lld", (long long)out_tok);
    const char *argv[] = {"3", key, rkey, STREAM, GROUP, entry, custom_id, value, ms, it, ot, expired ? "expired" : ""};
    size_t lens[12];
    for (int i = 0; i < 12; i++) lens[i] = i == 7 ? value_len : strlen(argv[i]);
    redisReply *r = eval(c, lua_result, 12, argv, lens, err);
    if (!r) return AG_EIO;
    freeReplyObject(r);
    return AG_OK;
}

/* Settle an entry with an error line (code, message) instead of running it. */
static ag_status settle_error(redisContext *c, const char *batch, const char *entry, const char *custom_id,
                              const char *code, const char *msg, bool expired, ag_err *err) {
    ag_buf b;
    ag_buf_init(&b);
    ag_jobs_result none = {0};
    result_line(&b, custom_id, &none, code, msg);
    ag_status st = b.err != AG_OK ? AG_NOMEM : settle(c, batch, entry, custom_id, b.data, b.len, 0, 0, expired, err);
    ag_buf_deinit(&b);
    return st;
}

static const redisReply *field(const redisReply *fields, const char *name) {
    for (size_t i = 0; fields && i + 1 < fields->elements; i += 2)
        if (fields->element[i]->type == REDIS_REPLY_STRING && strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1];
    return NULL;
}

/*
 * One stream entry ([id, [field, value, ...]]) delivered to us: settled
 * here (batch gone, cancelling, past its window, delivered too often) or
 * made a task.  True when it became out.
 */
static bool take_entry(redisContext *c, const redisReply *e, int64_t deliveries, const ag_jobs_claim_opts *o,
                       ag_jobs_task *out, ag_jobs_claim_counts *counts, ag_err *err) {
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING) return false;
    const char *entry = e->element[0]->str;
    const redisReply *fs = e->element[1]->type == REDIS_REPLY_ARRAY ? e->element[1] : NULL;
    const redisReply *batch = field(fs, "batch"), *cid = field(fs, "custom_id"), *url = field(fs, "url"),
                     *body = field(fs, "body");
    if (!batch || !cid || !url || !body) { /* not ours to read: acknowledged and dropped */
        redisReply *r = cmd(c, err, "XACK " STREAM " " GROUP " %s", entry);
        if (r) freeReplyObject(r);
        return false;
    }
    redisReply *b = cmd(c, err, "HMGET autoglm:batch:%s status expires_at tenant", batch->str);
    if (!b) return false;
    const char *status = b->element[0]->type == REDIS_REPLY_STRING ? b->element[0]->str : "";
    int64_t expires = b->element[1]->type == REDIS_REPLY_STRING ? atoll(b->element[1]->str) : 0;
    bool took = false;
    if (strcmp(status, "in_progress") != 0) {
        counts->skipped++;
        settle(c, batch->str, entry, cid->str, "s", 1, 0, 0, false, err);
    } else if (expires && now_ms() / 1000 >= expires) {
        counts->expired++;
        settle_error(c, batch->str, entry, cid->str, "batch_expired",
                     "This request could not be executed before the completion window expired.", true, err);
    } else if (o->max_deliveries && deliveries > (int64_t)o->max_deliveries) {
        counts->poisoned++;
        char msg[160];
        snprintf(msg, sizeof msg, "This request was delivered %lld times without an answer (--batch-max-deliveries %llu).",
                 (long long)deliveries - 1, (unsigned long long)o->max_deliveries);
        settle_error(c, batch->str, entry, cid->str, "max_deliveries_exceeded", msg, false, err);
    } else {
        memset(out, 0, sizeof *out);
        snprintf(out->entry, sizeof out->entry, "%s", entry);
        snprintf(out->batch, sizeof out->batch, "%s", batch->str);
        snprintf(out->tenant, sizeof out->tenant, "%s", b->element[2]->type == REDIS_REPLY_STRING ? b->element[2]->str : "");
        out->custom_id = ag_xstrndup(cid->str, (size_t)cid->len);
        out->url = ag_xstrndup(url->str, (size_t)url->len);
        out->body = ag_xstrndup(body->str, (size_t)body->len);
        out->body_len = (size_t)body->len;
        took = true;
    }
    freeReplyObject(b);
    return took;
}

/* How many times an entry has been delivered (XPENDING's extended form); 1 when it cannot be told. */
static int64_t deliveries_of(redisContext *c, const char *entry, ag_err *err) {
    redisReply *r = cmd(c, err, "XPENDING " STREAM " " GROUP " %s %s 1", entry, entry);
    int64_t n = 1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements >= 4)
        n = r->element[0]->element[3]->integer;
    if (r) freeReplyObject(r);
    return n;
}

ag_status ag_jobs_claim(ag_jobs *j, const ag_jobs_claim_opts *o, ag_jobs_task *out, size_t *n,
                        ag_jobs_claim_counts *counts, ag_err *err) {
    *n = 0;
    redisContext *c = conn_get(j, err);
    if (!c) return AG_EIO;
    ag_status st = AG_OK;
    /* entries other consumers left pending for claim_idle (they died or hang) */
    redisReply *r = cmd(c, err, "XAUTOCLAIM " STREAM " " GROUP " %s %llu 0-0 COUNT %llu", o->consumer,
                        (unsigned long long)o->claim_idle_ms, (unsigned long long)o->max);
    if (!r && strncmp(err->msg, "redis: NOGROUP", 14) == 0 && make_group(c, err)) st = AG_OK; /* nothing to claim */
    else if (!r) st = AG_EIO;
    else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[1]->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->element[1]->elements && *n < o->max; i++) {
            const redisReply *e = r->element[1]->element[i];
            if (e->type != REDIS_REPLY_ARRAY || !e->elements) continue;
            if (take_entry(c, e, deliveries_of(c, e->element[0]->str, err), o, &out[*n], counts, err)) (*n)++;
        }
    if (r) freeReplyObject(r);
    /* then new ones, until max are runnable or none are left (settled ones do not count) */
    while (st == AG_OK && *n < o->max) {
        r = cmd(c, err, "XREADGROUP GROUP " GROUP " %s COUNT %llu STREAMS " STREAM " >", o->consumer,
                (unsigned long long)(o->max - *n));
        if (!r) {
            st = AG_EIO;
            break;
        }
        size_t got = 0;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
            const redisReply *entries = r->element[0]->element[1];
            got = entries->elements;
            for (size_t i = 0; i < entries->elements; i++)
                if (take_entry(c, entries->element[i], 1, o, &out[*n], counts, err)) (*n)++;
        }
        freeReplyObject(r);
        if (!got) break;
    }
    conn_put(j, c);
    return st;
}

ag_status ag_jobs_touch(ag_jobs *j, const char *consumer, const char *const *entries, const char *const *batches,
                        size_t n, bool *live, ag_err *err) {
    if (!n) return AG_OK;
    redisContext *c = conn_get(j, err);
    if (!c) return AG_EIO;
    const char **argv = ag_xcalloc(n + 7, sizeof *argv);
    size_t k = 0;
    argv[k++] = "XCLAIM", argv[k++] = STREAM, argv[k++] = GROUP, argv[k++] = consumer, argv[k++] = "0";
    for (size_t i = 0; i < n; i++) argv[k++] = entries[i];
    argv[k++] = "JUSTID";
    redisAppendCommandArgv(c, (int)k, argv, NULL);
    free(argv);
    for (size_t i = 0; i < n; i++) redisAppendCommand(c, "HGET autoglm:batch:%s status", batches[i]);
    ag_status st = AG_OK;
    for (size_t i = 0; i <= n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            st = reply_error(c, NULL, err);
            break;
        }
        if (r->type == REDIS_REPLY_ERROR && st == AG_OK) st = reply_error(c, r, err), r = NULL;
        if (i && r) live[i - 1] = r->type == REDIS_REPLY_STRING && strcmp(r->str, "in_progress") == 0;
        if (r) freeReplyObject(r);
    }
    conn_put(j, c);
    return st;
}

ag_status ag_jobs_finish(ag_jobs *j, const ag_jobs_task *t, const ag_jobs_result *r, ag_err *err) {
    redisContext *c = conn_get(j, err);
    if (!c) return AG_EIO;
    ag_status st;
    if (!r->status) st = settle(c, t->batch, t->entry, t->custom_id, "s", 1, 0, 0, false, err);
    else {
        ag_buf b;
        ag_buf_init(&b);
        result_line(&b, t->custom_id, r, NULL, NULL);
        st = b.err != AG_OK ? AG_NOMEM
                            : settle(c, t->batch, t->entry, t->custom_id, b.data, b.len, r->input_tokens,
                                     r->output_tokens, false, err);
        ag_buf_deinit(&b);
    }
    conn_put(j, c);
    return st;
}

ag_status ag_jobs_depth(ag_jobs *j, int64_t *waiting, int64_t *pending, ag_err *err) {
    *waiting = *pending = 0;
    redisContext *c = conn_get(j, err);
    if (!c) return AG_EIO;
    redisReply *r = cmd(c, err, "XINFO GROUPS " STREAM);
    ag_status st = r ? AG_OK : AG_EIO;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *g = r->element[i], *name = field(g, "name");
        if (!name || strcmp(name->str, GROUP) != 0) continue;
        const redisReply *p = field(g, "pending"), *lag = field(g, "lag");
        if (p && p->type == REDIS_REPLY_INTEGER) *pending = p->integer;
        if (lag && lag->type == REDIS_REPLY_INTEGER) *waiting = lag->integer;
    }
    if (r) freeReplyObject(r);
    conn_put(j, c);
    return st;
}
