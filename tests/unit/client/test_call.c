/*
 * test_call.c - libautoglm's client against a scripted server in this
 * process (a thread per connection, answers chosen per test): the budget
 * during an outage, one client shared by many threads, a stream broken after
 * its first event, a 4xx costing one request, the headers every attempt
 * carries, and freeing the client under a call.  Runs under ASan and TSan.
 */
#define _GNU_SOURCE
#include "test.h"

#include "autoglm/client.h"
#include "base/arena.h"
#include "base/buf.h"
#include "json/json.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

/* ---- the scripted server ---- */

typedef enum {
    ANSWER_503,
    ANSWER_OK,
    ANSWER_404,
    ANSWER_BROKEN_STREAM,
    ANSWER_503_THEN_OK,
    ANSWER_NEVER,
    ANSWER_FIRST_NEVER, /* the first request: silence; the others: ok */
    ANSWER_FIRST_SLOW,  /* the first request: ok after 300 ms; the others: silence */
    ANSWER_ECHO,        /* choices in reverse order, choice i's text "<i>:" and prompt i */
} answer;

static struct {
    int fd, port;
    _Atomic answer mode;
    atomic_int requests;
    atomic_int closed; /* connections of this round (since reset) the client closed */
    atomic_int round;  /* reset's count: a connection of an earlier test that ends late is not counted */
    pthread_mutex_t mu;
    char keys[8][64];   /* Idempotency-Key of each request, first 8 */
    long timeouts_ms[8]; /* X-Request-Timeout-Ms of each request, first 8 */
    atomic_int prompts;  /* ANSWER_ECHO: prompts received, and the largest batch */
    atomic_int largest;
    char model[32];      /* ANSWER_ECHO: the last request's "model" (under mu) */
} srv;

static void header_value(const char *head, const char *name, char *out, size_t cap) {
    out[0] = 0;
    const char *p = strcasestr(head, name);
    if (!p) return;
    p += strlen(name);
    size_t n = strcspn(p, "\r\n");
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n), out[n] = 0;
}

/* ANSWER_ECHO: the prompts of an array-prompt request back as choices, last first (index says which). */
static int echo(int fd, const char *body, size_t n) {
    ag_arena a;
    ag_arena_init(&a, 4096);
    ag_json_val *root;
    ag_buf out, json;
    ag_buf_init(&out), ag_buf_init(&json);
    const ag_json_val *p = ag_json_parse(body, n, NULL, &a, &root, NULL) == AG_OK ? ag_json_obj_getc(root, "prompt") : NULL;
    int k = (int)ag_json_len(p);
    atomic_fetch_add(&srv.prompts, k);
    ag_str model = p ? ag_json_str(ag_json_obj_getc(root, "model")) : (ag_str){NULL, 0};
    pthread_mutex_lock(&srv.mu);
    snprintf(srv.model, sizeof srv.model, "%.*s", (int)model.n, model.p ? model.p : "");
    pthread_mutex_unlock(&srv.mu);
    for (int m = atomic_load(&srv.largest); k > m && !atomic_compare_exchange_weak(&srv.largest, &m, k);) {}
    ag_buf_appendf(&json, "{\"choices\":[");
    for (int i = k - 1; i >= 0; i--) {
        ag_str t = ag_json_str(ag_json_arr_at(p, (size_t)i));
        ag_buf_appendf(&json, "{\"index\":%d,\"text\":\"%d:%.*s\",\"finish_reason\":\"length\"}%s", i, i, (int)t.n, t.p,
                       i ? "," : "");
    }
    ag_buf_appendf(&json, "]}");
    ag_buf_appendf(&out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", json.len);
    ag_buf_append(&out, json.data, json.len);
    ssize_t w = write(fd, out.data, out.len);
    ag_buf_deinit(&out), ag_buf_deinit(&json);
    ag_arena_deinit(&a);
    return w < 0 ? -1 : 0;
}

/* arg: the connection's descriptor, and in the bits above 32 the round it was accepted in. */
static void *serve_conn(void *arg) {
    int fd = (int)((intptr_t)arg & 0xffffffff), round = (int)((intptr_t)arg >> 32);
    char buf[65536];
    size_t len = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
            ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
            if (n <= 0) goto out;
            len += (size_t)n;
        }
        *end = 0;
        char v[64];
        header_value(buf, "\ncontent-length: ", v, sizeof v);
        size_t head = (size_t)(end - buf) + 4, body = (size_t)atol(v);
        while (len < head + body) {
            ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
            if (n <= 0) goto out;
            len += (size_t)n;
        }
        int i = atomic_fetch_add(&srv.requests, 1);
        if (i < 8) {
            pthread_mutex_lock(&srv.mu);
            header_value(buf, "\nidempotency-key: ", srv.keys[i], sizeof srv.keys[i]);
            header_value(buf, "\nx-request-timeout-ms: ", v, sizeof v);
            srv.timeouts_ms[i] = atol(v);
            pthread_mutex_unlock(&srv.mu);
        }
        answer a = srv.mode;
        char req_body[16384];
        size_t bl = body < sizeof req_body ? body : 0;
        memcpy(req_body, buf + head, bl);
        memmove(buf, buf + head + body, len - head - body);
        len -= head + body;
        if (a == ANSWER_503_THEN_OK) a = i == 0 ? ANSWER_503 : ANSWER_OK;
        if (a == ANSWER_FIRST_NEVER) a = i == 0 ? ANSWER_NEVER : ANSWER_OK;
        if (a == ANSWER_FIRST_SLOW) {
            if (i == 0) usleep(300000);
            a = i == 0 ? ANSWER_OK : ANSWER_NEVER;
        }
        if (a == ANSWER_ECHO) {
            if (echo(fd, req_body, bl) < 0) break;
            continue;
        }
        const char *status = NULL, *type = "application/json", *json = NULL;
        switch (a) {
        case ANSWER_503: status = "503 Service Unavailable", json = "{\"error\":{\"message\":\"busy\",\"type\":\"x\"}}"; break;
        case ANSWER_OK: status = "200 OK", json = "{\"choices\":[{\"text\":\"hi\"}]}"; break;
        case ANSWER_404: status = "404 Not Found", json = "{\"error\":{\"message\":\"no such model\"}}"; break;
        case ANSWER_BROKEN_STREAM: status = "200 OK", type = "text/event-stream"; break;
        default: break;
        }
        if (!status) continue; /* ANSWER_NEVER: silence */
        char r[512];
        if (json)
            snprintf(r, sizeof r, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s", status, type,
                     strlen(json), json);
        else /* one event of a chunked stream, and then the connection ends */
            snprintf(r, sizeof r, "HTTP/1.1 %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n",
                     status, type, strlen("data: {\"choices\":[{\"text\":\"partial\"}]}\n\n"),
                     "data: {\"choices\":[{\"text\":\"partial\"}]}\n\n");
        if (write(fd, r, strlen(r)) < 0) break;
        if (a == ANSWER_BROKEN_STREAM) break; /* and the connection ends mid-stream */
    }
out:
    if (round == atomic_load(&srv.round)) atomic_fetch_add(&srv.closed, 1);
    close(fd);
    return NULL;
}

static void *accept_loop(void *arg) {
    (void)arg;
    for (;;) {
        int c = accept(srv.fd, NULL, NULL);
        if (c < 0) return NULL;
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, (void *)((intptr_t)atomic_load(&srv.round) << 32 | (intptr_t)c));
        pthread_detach(t);
    }
}

static int setup(void **state) {
    (void)state;
    srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(srv.fd, (struct sockaddr *)&a, sizeof a) || listen(srv.fd, 64) ||
        getsockname(srv.fd, (struct sockaddr *)&a, &al))
        return -1;
    srv.port = ntohs(a.sin_port);
    pthread_mutex_init(&srv.mu, NULL);
    pthread_t t;
    pthread_create(&t, NULL, accept_loop, NULL);
    pthread_detach(t);
    return 0;
}

static ag_client *client(ag_client_options o) {
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", srv.port);
    o.base_url = url;
    o.seed = 7;
    ag_client *c;
    ag_err err;
    if (ag_client_new(&o, &c, &err) != AG_OK) fail_msg("ag_client_new: %s", err.msg);
    return c;
}

static ag_client_options fast(void) {
    ag_client_options o = ag_client_options_default();
    o.retry.backoff_base_s = 0.001, o.retry.backoff_cap_s = 0.004;
    return o;
}

static const char BODY[] = "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":4}";
static const ag_client_request REQ = {.path = "/v1/completions", .body = BODY, .body_len = sizeof BODY - 1};

static void reset(answer mode) {
    srv.mode = mode;
    atomic_fetch_add(&srv.round, 1);
    atomic_store(&srv.requests, 0);
    atomic_store(&srv.closed, 0);
    atomic_store(&srv.prompts, 0);
    atomic_store(&srv.largest, 0);
}

/* ---- tests ---- */

/* One call on a client of its own (freed before returning): its outcome, attempts and the requests it cost. */
static ag_client_result call_once(ag_client_options o, const ag_client_request *req, ag_client_outcome outcome,
                                  int attempts, int requests) {
    ag_client *c = client(o);
    ag_client_result r;
    assert_int_equal(ag_client_call(c, req, &r), AG_OK);
    ag_client_free(c);
    assert_int_equal(r.outcome, outcome);
    assert_int_equal(r.attempts, attempts);
    assert_int_equal(atomic_load(&srv.requests), requests);
    return r;
}


static void test_budget_caps_an_outage(void **state) {
    (void)state;
    reset(ANSWER_503);
    ag_client *c = client(fast());
    int calls = 50;
    for (int i = 0; i < calls; i++) {
        ag_client_result r;
        assert_int_equal(ag_client_call(c, &REQ, &r), AG_OK);
        assert_int_equal(r.outcome, AG_CLIENT_HTTP_STATUS);
        assert_int_equal(r.status, 503);
        assert_string_equal(r.body, "{\"error\":{\"message\":\"busy\",\"type\":\"x\"}}");
        assert_non_null(strstr(r.error, "busy"));
        ag_client_result_free(&r);
    }
    ag_client_free(c);
    int seen = atomic_load(&srv.requests);
    ag_client_retry_policy p = ag_client_options_default().retry;
    assert_true(seen <= calls * (1 + p.budget_ratio) + p.budget_floor);
    assert_true(seen > calls); /* it did retry while the budget lasted */
    AG_TEST_NOTE("outage: %d calls cost %d requests (without the budget: %d)", calls, seen, calls * 3);
}

typedef struct worker {
    ag_client *c;
    int ok;
} worker;

static void *call_many(void *arg) {
    worker *w = arg;
    for (int i = 0; i < 20; i++) {
        ag_client_result r;
        if (ag_client_call(w->c, &REQ, &r) == AG_OK && r.outcome == AG_CLIENT_OK && strcmp(r.text, "hi") == 0) w->ok++;
        ag_client_result_free(&r);
    }
    return NULL;
}

static void test_threads_share_one_client(void **state) {
    (void)state;
    reset(ANSWER_OK);
    ag_client_options o = fast();
    o.max_connections = 3; /* 8 threads: calls wait for connections */
    ag_client *c = client(o);
    pthread_t t[8];
    worker w[8];
    for (int i = 0; i < 8; i++) w[i] = (worker){.c = c}, pthread_create(&t[i], NULL, call_many, &w[i]);
    int ok = 0;
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL), ok += w[i].ok;
    ag_client_free(c);
    assert_int_equal(ok, 160);
    assert_int_equal(atomic_load(&srv.requests), 160);
}

static void on_delta(const char *text, size_t len, void *ud) { ag_buf_append((ag_buf *)ud, text, len); }

static void test_broken_stream_is_not_retried(void **state) {
    (void)state;
    reset(ANSWER_BROKEN_STREAM);
    static const char sb[] = "{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true}";
    ag_buf got;
    ag_buf_init(&got);
    ag_client_request req = {.path = "/v1/completions", .body = sb, .body_len = sizeof sb - 1, .on_delta = on_delta, .ud = &got};
    ag_client_result r = call_once(fast(), &req, AG_CLIENT_STREAM_BROKEN, 1, 1);
    assert_string_equal(r.text, "partial");
    assert_int_equal(got.len, 7);
    assert_non_null(strstr(r.error, "bytes of text delivered"));
    ag_client_result_free(&r);
    ag_buf_deinit(&got);
}

static void test_4xx_costs_one_request(void **state) {
    (void)state;
    reset(ANSWER_404);
    ag_client_result r = call_once(fast(), &REQ, AG_CLIENT_HTTP_STATUS, 1, 1);
    assert_string_equal(r.error, "no such model");
    ag_client_result_free(&r);
}

static void test_attempts_carry_one_key_and_the_time_left(void **state) {
    (void)state;
    reset(ANSWER_503_THEN_OK);
    ag_client_options o = fast();
    o.total_timeout_ms = 5000;
    ag_client_result r = call_once(o, &REQ, AG_CLIENT_OK, 2, 2);
    assert_int_equal(strlen(srv.keys[0]), 36);
    assert_string_equal(srv.keys[0], srv.keys[1]);
    assert_true(srv.timeouts_ms[0] > 0 && srv.timeouts_ms[0] <= 5000);
    assert_true(srv.timeouts_ms[1] > 0 && srv.timeouts_ms[1] <= srv.timeouts_ms[0]);
    ag_client_result_free(&r);
}

static atomic_int closed_seen;
static void on_done(ag_client_result *r, void *ud) {
    (void)ud;
    if (r->outcome == AG_CLIENT_CLOSED) atomic_fetch_add(&closed_seen, 1);
}

static void test_free_ends_calls_under_way(void **state) {
    (void)state;
    reset(ANSWER_NEVER);
    ag_client_options o = fast();
    o.max_connections = 1;
    ag_client *c = client(o);
    for (int i = 0; i < 3; i++) assert_int_equal(ag_client_call_async(c, &REQ, on_done, NULL), AG_OK); /* 1 sent, 2 wait */
    while (atomic_load(&srv.requests) < 1) usleep(1000);
    ag_client_free(c);
    assert_int_equal(atomic_load(&closed_seen), 3);
}

typedef struct pending {
    ag_client *c;
    ag_client_result r;
} pending;

static void *call_one(void *arg) {
    pending *p = arg;
    ag_client_call(p->c, &REQ, &p->r);
    return NULL;
}

/* ag_client_cancel from another thread ends the call under way; the client then serves the next one. */
static void test_cancel_from_another_thread(void **state) {
    (void)state;
    reset(ANSWER_NEVER);
    pending p = {.c = client(fast())};
    pthread_t t;
    pthread_create(&t, NULL, call_one, &p);
    while (atomic_load(&srv.requests) < 1) usleep(1000);
    ag_client_cancel(p.c);
    pthread_join(t, NULL);
    assert_int_equal(p.r.outcome, AG_CLIENT_CANCELLED);
    assert_int_equal(p.r.attempts, 1);
    ag_client_result_free(&p.r);
    srv.mode = ANSWER_OK;
    assert_int_equal(ag_client_call(p.c, &REQ, &p.r), AG_OK);
    assert_int_equal(p.r.outcome, AG_CLIENT_OK);
    ag_client_result_free(&p.r);
    ag_client_free(p.c);
}

/* Hedging: a copy goes out after the hedge delay with the call's key; the first 2xx answer wins, and the copy
 * that lost is cancelled (its connection closed).  The bounds are the attempts' outcomes, not times. */
/* One call on a client with hedging after 50 ms, against the scripted server in mode m: the client, still open. */
static ag_client *hedged_call(answer m, ag_client_result *r) {
    reset(m);
    ag_client_options o = fast();
    o.hedge = true, o.hedge_initial_ms = 50;
    ag_client *c = client(o);
    assert_int_equal(ag_client_call(c, &REQ, r), AG_OK);
    assert_int_equal(r->outcome, AG_CLIENT_OK);
    return c;
}

static void test_hedge_beats_a_stalled_attempt(void **state) {
    (void)state;
    ag_client_result r;
    ag_client *c = hedged_call(ANSWER_FIRST_NEVER, &r); /* without the copy: the 60 s first-byte timeout */
    assert_string_equal(r.text, "hi");
    assert_true(r.hedged && r.hedge_won);
    assert_int_equal(r.attempts, 2);
    assert_int_equal(atomic_load(&srv.requests), 2);
    assert_string_equal(srv.keys[0], srv.keys[1]); /* one call, one key: autoglm generates once */
    for (int i = 0; i < 2000 && atomic_load(&srv.closed) < 1; i++) usleep(1000);
    assert_int_equal(atomic_load(&srv.closed), 1); /* the stalled primary's connection */
    ag_client_result_free(&r);
    ag_client_free(c);
}

static void test_hedge_cancelled_when_the_primary_wins(void **state) {
    (void)state;
    ag_client_result r;
    ag_client *c = hedged_call(ANSWER_FIRST_SLOW, &r);
    assert_true(r.hedged && !r.hedge_won);
    assert_int_equal(r.attempts, 2); /* the primary's, and the cancelled copy's */
    for (int i = 0; i < 2000 && atomic_load(&srv.closed) < 1; i++) usleep(1000);
    assert_int_equal(atomic_load(&srv.closed), 1); /* the copy's */
    ag_client_result_free(&r);
    srv.mode = ANSWER_OK; /* the client goes on serving calls */
    assert_int_equal(ag_client_call(c, &REQ, &r), AG_OK);
    assert_int_equal(r.outcome, AG_CLIENT_OK);
    ag_client_result_free(&r);
    ag_client_free(c);
}

/* The batcher: many threads' prompts go out as few array-prompt requests, each result back to its caller (the
 * scripted server answers the choices out of order; index says whose). */
typedef struct bworker {
    ag_batcher *b;
    int id, ok;
} bworker;

static void *batch_many(void *arg) {
    bworker *w = arg;
    for (int i = 0; i < 10; i++) {
        char prompt[32], want[40];
        snprintf(prompt, sizeof prompt, "t%d-p%d", w->id, i);
        ag_client_result r;
        if (ag_batcher_complete(w->b, prompt, strlen(prompt), &r) != AG_OK) continue;
        /* its text is "<index>:<prompt>": the index is its place in its batch, unknown here */
        const char *colon = r.text ? strchr(r.text, ':') : NULL;
        snprintf(want, sizeof want, "%s", prompt);
        w->ok += r.outcome == AG_CLIENT_OK && colon && strcmp(colon + 1, want) == 0 && strstr(r.body, "\"index\"");
        ag_client_result_free(&r);
    }
    return NULL;
}

static void test_batcher_splits_results_back(void **state) {
    (void)state;
    reset(ANSWER_ECHO);
    ag_client *c = client(fast());
    ag_batcher_options bo = ag_batcher_options_default();
    bo.max_batch = 4, bo.max_wait_ms = 50;
    ag_batcher *b;
    ag_err err;
    assert_int_equal(ag_batcher_new(c, "{\"model\":\"m\",\"max_tokens\":4}", &bo, &b, &err), AG_OK);
    pthread_t t[8];
    bworker w[8];
    for (int i = 0; i < 8; i++) w[i] = (bworker){.b = b, .id = i}, pthread_create(&t[i], NULL, batch_many, &w[i]);
    int ok = 0;
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL), ok += w[i].ok;
    assert_int_equal(ok, 80);
    assert_int_equal(atomic_load(&srv.prompts), 80);
    int requests = atomic_load(&srv.requests);
    assert_true(requests >= 20 && requests < 80); /* batches of at most 4, and some of more than one */
    assert_true(atomic_load(&srv.largest) <= 4 && atomic_load(&srv.largest) >= 2);
    AG_TEST_NOTE("80 prompts from 8 threads: %d requests, batches of up to %d", requests, atomic_load(&srv.largest));
    assert_string_equal(srv.model, "m");
    ag_batcher_free(b);
    ag_client_free(c);
    /* a lone prompt leaves after max_wait_ms, alone; options.model fills in a body without "model" */
    reset(ANSWER_ECHO);
    ag_client_options o = fast();
    o.model = "from-options";
    c = client(o);
    assert_int_equal(ag_batcher_new(c, "{\"max_tokens\":4}", &bo, &b, &err), AG_OK);
    ag_client_result r;
    assert_int_equal(ag_batcher_complete(b, "solo", 4, &r), AG_OK);
    assert_int_equal(r.outcome, AG_CLIENT_OK);
    assert_string_equal(r.text, "0:solo");
    assert_int_equal(atomic_load(&srv.requests), 1);
    assert_string_equal(srv.model, "from-options");
    ag_client_result_free(&r);
    ag_batcher_free(b);
    /* parameters a batch cannot share are refused */
    assert_int_equal(ag_batcher_new(c, "{\"model\":\"m\",\"stream\":true}", &bo, &b, &err), AG_EINVAL);
    assert_int_equal(ag_batcher_new(c, "{\"prompt\":\"x\"}", &bo, &b, &err), AG_EINVAL);
    assert_int_equal(ag_batcher_new(c, "[1]", &bo, &b, &err), AG_EINVAL);
    bo.max_batch = 0;
    assert_int_equal(ag_batcher_new(c, "{}", &bo, &b, &err), AG_EINVAL);
    ag_client_free(c);
}

/* On the caller's loop: no thread; the last done callback frees the client, and then the loop has nothing left. */
static int loop_ok, loop_done;
static void on_loop_done(ag_client_result *r, void *ud) {
    loop_ok += r->outcome == AG_CLIENT_OK && strcmp(r->text, "hi") == 0;
    if (++loop_done == 10) ag_client_free(ud);
}

static void test_on_the_callers_loop(void **state) {
    (void)state;
    reset(ANSWER_OK);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ag_client_options o = fast();
    o.loop = &loop, o.max_connections = 4;
    ag_client *c = client(o);
    ag_client_result r;
    assert_int_equal(ag_client_call(c, &REQ, &r), AG_EINVAL); /* blocking would wait on the caller's own loop */
    for (int i = 0; i < 10; i++) assert_int_equal(ag_client_call_async(c, &REQ, on_loop_done, c), AG_OK);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(loop_ok, 10);
    assert_int_equal(atomic_load(&srv.requests), 10);
    assert_int_equal(uv_loop_close(&loop), 0); /* every handle of the client's closed */
}

static void test_bad_requests(void **state) {
    (void)state;
    ag_client *c = client(fast());
    ag_client_result r;
    ag_client_request bad = {.path = "v1/completions", .body = BODY, .body_len = sizeof BODY - 1};
    assert_int_equal(ag_client_call(c, &bad, &r), AG_EINVAL);
    bad = (ag_client_request){.path = "/v1/completions", .body = "[1]", .body_len = 3};
    assert_int_equal(ag_client_call(c, &bad, &r), AG_EINVAL);
    bad.body = "{", bad.body_len = 1;
    assert_int_equal(ag_client_call(c, &bad, &r), AG_EINVAL);
    ag_client_free(c);
    ag_client_options o = ag_client_options_default();
    ag_err err;
    o.base_url = "ftp://x";
    assert_int_equal(ag_client_new(&o, &c, &err), AG_EINVAL);
    assert_non_null(strstr(err.msg, "http"));
    o.base_url = "http://127.0.0.1:99999";
    assert_int_equal(ag_client_new(&o, &c, &err), AG_EINVAL);
    o.base_url = "http://127.0.0.1:8080", o.max_connections = 0;
    assert_int_equal(ag_client_new(&o, &c, &err), AG_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_caps_an_outage),
        cmocka_unit_test(test_threads_share_one_client),
        cmocka_unit_test(test_broken_stream_is_not_retried),
        cmocka_unit_test(test_4xx_costs_one_request),
        cmocka_unit_test(test_attempts_carry_one_key_and_the_time_left),
        cmocka_unit_test(test_free_ends_calls_under_way),
        cmocka_unit_test(test_cancel_from_another_thread),
        cmocka_unit_test(test_hedge_beats_a_stalled_attempt),
        cmocka_unit_test(test_hedge_cancelled_when_the_primary_wins),
        cmocka_unit_test(test_batcher_splits_results_back),
        cmocka_unit_test(test_on_the_callers_loop),
        cmocka_unit_test(test_bad_requests),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
