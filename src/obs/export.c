/*
 * export.c - the log queue and the OTLP span exporter (see export.h).
 *
 * Both are a mutex-protected buffer and one thread.  The producer (the loop
 * thread) only ever copies under the lock; every system call that can block
 * (write to a file, connect, send, receive) happens on the writer thread
 * without the lock.  The OTLP client is a minimal blocking HTTP/1.1 POST
 * with poll() timeouts, one connection per batch: a batch every half second
 * does not need more, and a collector that hangs costs at most the timeout.
 */
#define _POSIX_C_SOURCE 200809L
#include "obs/export.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- log queue -------------------------------------------------------------------- */

struct ag_logq {
    FILE *out;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    char *front, *back; /* producers fill front; the writer swaps and writes back */
    size_t len, cap;
    bool stop;
    _Atomic uint64_t *dropped;
};

/*
 * The writer wakes every LOGQ_TICK_MS, or early when the buffer is half full:
 * waking it for every line would cost a futex wake and a write per request.
 */
#define LOGQ_TICK_MS 100

static void *logq_main(void *arg) {
    ag_logq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        if (q->len < q->cap / 2 && !q->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t end = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + LOGQ_TICK_MS * 1000000ull;
            ts.tv_sec = (time_t)(end / 1000000000ull), ts.tv_nsec = (long)(end % 1000000000ull);
            pthread_cond_timedwait(&q->cv, &q->mu, &ts);
        }
        if (!q->len) {
            if (q->stop) break;
            continue;
        }
        char *buf = q->front;
        size_t n = q->len;
        q->front = q->back, q->back = buf, q->len = 0;
        pthread_mutex_unlock(&q->mu);
        fwrite(buf, 1, n, q->out);
        fflush(q->out);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

ag_logq *ag_logq_create(FILE *out, size_t cap, _Atomic uint64_t *dropped) {
    ag_logq *q = ag_xcalloc(1, sizeof *q);
    q->out = out, q->cap = cap, q->dropped = dropped;
    q->front = ag_xmalloc(cap), q->back = ag_xmalloc(cap);
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&q->thread, NULL, logq_main, q) != 0) {
        free(q->front), free(q->back), free(q);
        return NULL;
    }
    return q;
}

void ag_logq_push(const char *line, size_t len, void *arg) {
    ag_logq *q = arg;
    pthread_mutex_lock(&q->mu);
    if (q->len + len <= q->cap) {
        bool half = q->len < q->cap / 2 && q->len + len >= q->cap / 2;
        memcpy(q->front + q->len, line, len);
        q->len += len;
        if (half) pthread_cond_signal(&q->cv);
    } else {
        atomic_fetch_add_explicit(q->dropped, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&q->mu);
}

void ag_logq_destroy(ag_logq *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->front), free(q->back), free(q);
}

/* ---- OTLP exporter ------------------------------------------------------------------ */

struct ag_otlp {
    ag_otlp_params p;
    char host[256], port[16], path[512];
    char *service;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    char **queue;
    size_t n;
    bool stop;
};

static ag_status parse_endpoint(ag_otlp *o, const char *url, ag_err *err) {
    if (strncmp(url, "http://", 7) != 0)
        return ag_err_set(err, AG_EINVAL, "--otlp-endpoint must be an http:// URL (TLS is not supported)");
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = memchr(h, ':', hl);
    size_t name_len = colon ? (size_t)(colon - h) : hl;
    if (!name_len || name_len >= sizeof o->host) return ag_err_set(err, AG_EINVAL, "--otlp-endpoint has no host");
    memcpy(o->host, h, name_len);
    if (colon) snprintf(o->port, sizeof o->port, "%.*s", (int)(hl - name_len - 1), colon + 1);
    else snprintf(o->port, sizeof o->port, "80");
    const char *base = slash ? slash : "";
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    snprintf(o->path, sizeof o->path, "%.*s/v1/traces", (int)bl, base);
    return AG_OK;
}

/* Wait for fd to be ready for events until the deadline; false on timeout or error. */
static bool wait_fd(int fd, short events, uint64_t deadline_ns) {
    for (;;) {
        uint64_t now = ag_clock_mono_ns();
        if (now >= deadline_ns) return false;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)((deadline_ns - now) / 1000000 + 1));
        if (r > 0) return true; /* ready, or failed: the next call says which */
        if (r < 0 && errno != EINTR) return false;
    }
}

/* POST body; true on a 2xx answer within the timeout. */
static bool post(ag_otlp *o, const char *body, size_t len) {
    uint64_t deadline = ag_clock_mono_ns() + (uint64_t)o->p.timeout_ms * 1000000ull;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(o->host, o->port, &hints, &ai) != 0 || !ai) return false;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool ok = false;
    if (fd < 0) goto done;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) goto done;
    if (!wait_fd(fd, POLLOUT, deadline)) goto done;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) goto done;
    ag_buf req;
    ag_buf_init(&req);
    ag_buf_appendf(&req, "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n", o->path, o->host, o->port, len);
    ag_buf_append(&req, body, len);
    size_t sent = 0;
    while (req.err == AG_OK && sent < req.len) {
        ssize_t w = send(fd, req.data + sent, req.len - sent, MSG_NOSIGNAL);
        if (w > 0) sent += (size_t)w;
        else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(fd, POLLOUT, deadline)) break;
        } else break;
    }
    bool all = req.err == AG_OK && sent == req.len;
    ag_buf_deinit(&req);
    if (!all) goto done;
    char head[16];
    size_t got = 0;
    while (got < 12) {
        ssize_t r = recv(fd, head + got, sizeof head - got, 0);
        if (r > 0) got += (size_t)r;
        else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(fd, POLLIN, deadline)) break;
        } else break;
    }
    ok = got >= 12 && memcmp(head, "HTTP/1.", 7) == 0 && head[9] == '2';
done:
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    return ok;
}

static void send_batch(ag_otlp *o, char **spans, size_t n) {
    ag_buf body;
    ag_buf_init(&body);
    ag_buf_append_str(&body, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":");
    ag_buf_append_json_str(&body, o->service, strlen(o->service), AG_UTF8_REPLACE);
    ag_buf_append_str(&body, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"autoglm\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) ag_buf_append_char(&body, ',');
        ag_buf_append_str(&body, spans[i]);
        free(spans[i]);
    }
    ag_buf_append_str(&body, "]}]}]}");
    bool ok = body.err == AG_OK && post(o, body.data, body.len);
    atomic_fetch_add_explicit(ok ? o->p.exported : o->p.dropped, n, memory_order_relaxed);
    ag_buf_deinit(&body);
}

static void *otlp_main(void *arg) {
    ag_otlp *o = arg;
    char **batch = ag_xcalloc(o->p.batch, sizeof *batch);
    pthread_mutex_lock(&o->mu);
    for (;;) {
        if (o->n < o->p.batch && !o->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t end = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + o->p.interval_ms * 1000000ull;
            ts.tv_sec = (time_t)(end / 1000000000ull), ts.tv_nsec = (long)(end % 1000000000ull);
            while (o->n < o->p.batch && !o->stop)
                if (pthread_cond_timedwait(&o->cv, &o->mu, &ts) == ETIMEDOUT) break;
        }
        if (!o->n) {
            if (o->stop) break;
            continue;
        }
        size_t n = o->n < o->p.batch ? o->n : o->p.batch;
        memcpy(batch, o->queue, n * sizeof *batch);
        memmove(o->queue, o->queue + n, (o->n - n) * sizeof *o->queue);
        o->n -= n;
        pthread_mutex_unlock(&o->mu);
        send_batch(o, batch, n);
        pthread_mutex_lock(&o->mu);
    }
    pthread_mutex_unlock(&o->mu);
    free(batch);
    return NULL;
}

ag_status ag_otlp_create(const ag_otlp_params *p, ag_otlp **out, ag_err *err) {
    *out = NULL;
    ag_otlp *o = ag_xcalloc(1, sizeof *o);
    o->p = *p;
    if (!o->p.max_queue) o->p.max_queue = 4096;
    if (!o->p.batch) o->p.batch = 512;
    if (!o->p.interval_ms) o->p.interval_ms = 500;
    if (!o->p.timeout_ms) o->p.timeout_ms = 2000;
    ag_status st = parse_endpoint(o, p->endpoint, err);
    if (st != AG_OK) {
        free(o);
        return st;
    }
    o->service = ag_xstrdup(p->service ? p->service : "autoglm");
    o->queue = ag_xcalloc(o->p.max_queue, sizeof *o->queue);
    pthread_mutex_init(&o->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&o->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&o->thread, NULL, otlp_main, o) != 0) {
        free(o->queue), free(o->service), free(o);
        return ag_err_set(err, AG_ERR, "cannot start the OTLP export thread");
    }
    *out = o;
    return AG_OK;
}

void ag_otlp_submit(ag_otlp *o, char *span) {
    pthread_mutex_lock(&o->mu);
    if (o->n < o->p.max_queue) {
        o->queue[o->n++] = span;
        if (o->n >= o->p.batch) pthread_cond_signal(&o->cv);
        span = NULL;
    }
    pthread_mutex_unlock(&o->mu);
    if (span) {
        free(span);
        atomic_fetch_add_explicit(o->p.dropped, 1, memory_order_relaxed);
    }
}

void ag_otlp_destroy(ag_otlp *o) {
    if (!o) return;
    pthread_mutex_lock(&o->mu);
    o->stop = true;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->thread, NULL);
    for (size_t i = 0; i < o->n; i++) free(o->queue[i]);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o->queue), free(o->service), free(o);
}
