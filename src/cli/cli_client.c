/*
 * cli_client.c - the flags `autoglm complete` and `autoglm chat` share to
 * reach a server through libautoglm (see cli.h), and their environment
 * defaults, which are the OpenAI SDKs' too.
 */
#include "autoglm/client.h"
#include "base/str.h"
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

static bool duration_ms(const char *t, uint32_t *ms) {
    uint64_t v;
    if (!t || ag_str_parse_duration_ms(ag_str_from_cstr(t), &v) != AG_OK || v == 0 || v > UINT32_MAX) return false;
    *ms = (uint32_t)v;
    return true;
}

int ag_cli_client_flag(const char *cmd, int argc, char **argv, int *i, ag_client_options *o, const char **base) {
    const char *a = argv[*i], *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    long v;
    if (strcmp(a, "--insecure") == 0) return o->insecure = true, 1;
    if (strcmp(a, "--compress") == 0) return o->compress = true, 1;
    if (strcmp(a, "--hedge") == 0) return o->hedge = true, 1;
    if (strcmp(a, "--http2") == 0) return o->http2 = true, 1;
    bool ours = strcmp(a, "--base-url") == 0 || strcmp(a, "--api-key") == 0 || strcmp(a, "--cacert") == 0 ||
                strcmp(a, "--retries") == 0 || strcmp(a, "--timeout") == 0 || strcmp(a, "--connect-timeout") == 0 ||
                strcmp(a, "--first-byte-timeout") == 0;
    if (!ours) return 0;
    if (!val) return ag_cli_usage_error(cmd, "%s needs a value", a), -1;
    ++*i;
    if (strcmp(a, "--base-url") == 0) *base = val;
    else if (strcmp(a, "--api-key") == 0) o->api_key = val;
    else if (strcmp(a, "--cacert") == 0) o->ca_file = val;
    else if (strcmp(a, "--retries") == 0) {
        if (!ag_cli_int(cmd, a, val, 0, 100, &v)) return -1;
        o->retry.max_retries = (int)v;
    } else {
        uint32_t *to = a[2] == 't' ? &o->total_timeout_ms : a[2] == 'c' ? &o->connect_timeout_ms : &o->first_byte_timeout_ms;
        if (!duration_ms(val, to)) return ag_cli_usage_error(cmd, "%s needs a duration such as 500ms, 30s or 2m", a), -1;
    }
    return 1;
}

int ag_cli_client_finish(const char *cmd, ag_client_options *o, const char *base, char *url, size_t cap) {
    if (!base) base = getenv("AUTOGLM_BASE_URL");
    if (!base || !*base) base = getenv("OPENAI_BASE_URL");
    if (!base || !*base) return ag_cli_usage_error(cmd, "no server: give --base-url URL (or set AUTOGLM_BASE_URL)");
    if (!o->api_key) o->api_key = getenv("AUTOGLM_API_KEY");
    if (!o->api_key) o->api_key = getenv("OPENAI_API_KEY");
    if (o->insecure && o->ca_file) return ag_cli_usage_error(cmd, "--insecure and --cacert are exclusive");
    /* OpenAI's SDKs take the base URL with /v1; the client's paths carry it */
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    if (bl >= 3 && strncmp(base + bl - 3, "/v1", 3) == 0) bl -= 3;
    if (bl >= cap) return ag_cli_usage_error(cmd, "--base-url is too long");
    memcpy(url, base, bl), url[bl] = 0;
    o->base_url = url;
    return -1;
}
