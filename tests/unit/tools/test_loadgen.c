/*
 * test_loadgen.c - one load generator step against a server in this process
 * (a thread answering HTTP/1.1 keep-alive requests).  Regression: Ctrl-C
 * seen first by a request's end, not by the 1 ms tick, let the step finish
 * with its last connection closed before the tick ran, and the step did not
 * say it was interrupted (`bench` printed "116 of 116 ok" for a 60 s step
 * stopped after 1.5 s).  The server raises the interrupt itself just before
 * it answers, so the answer's arrival is what sees it first.
 */
#define _GNU_SOURCE
#include "test.h"

#include "tools/loadgen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { INTERRUPT_AT = 20 }; /* the request whose answer follows the interrupt */

static int listen_fd;

/* One connection's requests (no bodies) answered in turn until it closes. */
static void *serve(void *arg) {
    (void)arg;
    int fd = accept(listen_fd, NULL, NULL);
    char buf[4096];
    size_t have = 0;
    int answered = 0;
    for (;;) {
        char *end = memmem(buf, have, "\r\n\r\n", 4);
        if (!end) {
            ssize_t n = read(fd, buf + have, sizeof buf - have);
            if (n <= 0) break;
            have += (size_t)n;
            continue;
        }
        size_t used = (size_t)(end + 4 - buf);
        memmove(buf, buf + used, have - used), have -= used;
        if (++answered == INTERRUPT_AT) ag_lg_interrupt();
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if (write(fd, ok, sizeof ok - 1) != (ssize_t)sizeof ok - 1) break;
    }
    close(fd);
    return NULL;
}

static void test_interrupt_seen_by_a_request_end_marks_the_step(void **state) {
    (void)state;
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(listen_fd, 4), 0);
    assert_int_equal(getsockname(listen_fd, (struct sockaddr *)&a, &alen), 0);
    pthread_t t;
    pthread_create(&t, NULL, serve, NULL);

    ag_lg_requests reqs = {0};
    ag_lg_requests_add(&reqs, "GET", "/", NULL, NULL, 0);
    ag_lg_target target = {.host = "127.0.0.1", .port = ntohs(a.sin_port)};
    ag_lg_step step = {.target = &target, .reqs = &reqs, .concurrency = 1, .duration_ns = 600000000000ull,
                       .timeout_ns = 60000000000ull, .label = "test"};
    ag_lg_result r;
    char msg[256];
    assert_int_equal(ag_lg_run(&step, &r, msg, sizeof msg), AG_OK); /* stopped, not run for 10 minutes */
    assert_true(ag_lg_interrupted());
    assert_true(r.interrupted);
    /* The request in flight at the interrupt either ended ok or was aborted; none was sent after it. */
    assert_int_equal(r.ok + r.aborted, INTERRUPT_AT);
    assert_int_equal(r.counted, INTERRUPT_AT);
    pthread_join(t, NULL);
    close(listen_fd);
    ag_lg_requests_free(&reqs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interrupt_seen_by_a_request_end_marks_the_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
