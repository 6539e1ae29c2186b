/*
 * client.c - the smallest program on libautoglm: one completion, retried by
 * the client's policy, from any OpenAI-compatible server.
 *
 *   cc client.c $(pkg-config --cflags --libs autoglm) -o client
 *   ./client http://127.0.0.1:8080 autoglm-tiny "In the beginning"
 */
#include <autoglm/client.h>

#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s BASE_URL MODEL PROMPT\n", argv[0]);
        return 2;
    }
    ag_client_options o = ag_client_options_default();
    o.base_url = argv[1];
    ag_client *c;
    ag_err err;
    if (ag_client_new(&o, &c, &err) != AG_OK) {
        fprintf(stderr, "client: %s\n", err.msg);
        return 1;
    }
    char prompt[512], body[1200];
    size_t k = 0; /* the prompt as a JSON string's inside: quotes and backslashes escaped, control bytes dropped */
    for (const char *p = argv[3]; *p && k + 2 < sizeof prompt; p++) {
        if (*p == '"' || *p == '\\') prompt[k++] = '\\';
        if ((unsigned char)*p >= 0x20) prompt[k++] = *p;
    }
    prompt[k] = 0;
    int n = snprintf(body, sizeof body, "{\"model\": \"%.100s\", \"prompt\": \"%s\", \"max_tokens\": 16}", argv[2], prompt);
    ag_client_request req = {.path = "/v1/completions", .body = body, .body_len = (size_t)n};
    ag_client_result res;
    int rc = 1;
    if (ag_client_call(c, &req, &res) == AG_OK) {
        if (res.outcome == AG_CLIENT_OK) printf("%s\n", res.text), rc = 0;
        else fprintf(stderr, "client: %s after %d attempts\n", res.error, res.attempts);
        ag_client_result_free(&res);
    }
    ag_client_free(c);
    return rc;
}
