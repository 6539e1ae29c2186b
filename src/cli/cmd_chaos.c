/*
 * cmd_chaos.c - `autoglm chaos`: the fault-injection proxy (src/tools/chaos.c)
 * from the command line.  Every fault flag takes the text the admin API's
 * JSON takes under the same name (src/tools/chaos_faults.c).
 */
#include "cli/cli.h"
#include "tools/chaos.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char chaos_usage[] =
    "usage: autoglm chaos --listen HOST:PORT --upstream HOST:PORT [--admin HOST:PORT] [faults...]\n\n"
    "A TCP proxy that injects network faults between any client and any server. Each fault has a toxicity\n"
    "(,p=P: the chance a new connection gets it, drawn when it is accepted); link faults act on one direction\n"
    "(,up: client to upstream; ,down: upstream to client, the default; ,both).\n"
    "Link faults:\n"
    "  --latency D[,dir][,p=P]          hold each chunk D (us, ms, s, m)\n"
    "  --jitter D[,dir][,p=P]           ± D uniform on top of --latency (order kept)\n"
    "  --bandwidth RATE[,dir][,p=P]     at most RATE: 1mbit, 500kbit, 64KB (bytes), ...\n"
    "  --slice N[,dir][,p=P]            write at most N bytes at a time\n"
    "  --reset-after-bytes N[,dir][,p=P]  reset both sides after N bytes in that direction\n"
    "Connection faults:\n"
    "  --drop-connections P             reset a new connection at once\n"
    "  --stall D[,p=P]                  accept, forward nothing, close after D\n"
    "  --slow-close D[,p=P]             a side's close reaches the other D later\n"
    "HTTP/1.1:\n"
    "  --http-error CODE:P              answer a request with CODE instead of forwarding it (chance P per request)\n"
    "  --retry-after S                  send Retry-After: S with those answers\n"
    "  --http-delay D:P                 hold a request D before forwarding it (chance P per request)\n"
    "Control:\n"
    "  --admin HOST:PORT                GET/PUT/DELETE /faults (JSON, the flags' names), GET /metrics\n"
    "  --max-buffer BYTES               held per direction of a connection before reading pauses (default 1 MiB)\n"
    "  --seed S                         the draws (default 1)\n";

#define USAGE(...) ag_cli_usage_error("chaos", __VA_ARGS__)

/* HOST:PORT (or [v6]:PORT) into host (static storage per call site) and port. */
static bool host_port(const char *s, char *host, size_t cap, int *port) {
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return false;
    const char *h = s, *he = colon;
    if (*h == '[' && he[-1] == ']') h++, he--;
    if ((size_t)(he - h) >= cap || he <= h) return false;
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = 0;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    *port = (int)p;
    return *end == 0 && p >= 0 && p <= 65535 && end != colon + 1;
}

int ag_cmd_chaos(int argc, char **argv) {
    static char listen_host[256], upstream_host[256], admin_host[256];
    ag_chaos_opts o = {.max_buffer = 1 << 20, .seed = 1};
    char msg[256];
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (ag_cli_is_help(a)) return fputs(chaos_usage, stdout), AG_EXIT_OK;
        if (strncmp(a, "--", 2) != 0 || !val) return USAGE("unknown option '%s' or it needs a value (try 'autoglm chaos --help')", a);
        i++;
        long v;
        if (strcmp(a, "--listen") == 0) {
            if (!host_port(val, listen_host, sizeof listen_host, &o.listen_port)) return USAGE("--listen needs HOST:PORT");
            o.listen_host = listen_host;
        } else if (strcmp(a, "--upstream") == 0) {
            if (!host_port(val, upstream_host, sizeof upstream_host, &o.upstream_port) || !o.upstream_port)
                return USAGE("--upstream needs HOST:PORT");
            o.upstream_host = upstream_host;
        } else if (strcmp(a, "--admin") == 0) {
            if (!host_port(val, admin_host, sizeof admin_host, &o.admin_port)) return USAGE("--admin needs HOST:PORT");
            o.admin_host = admin_host;
        } else if (strcmp(a, "--max-buffer") == 0) {
            if (!ag_cli_int("chaos", a, val, 4096, 1L << 30, &v)) return AG_EXIT_USAGE;
            o.max_buffer = (size_t)v;
        } else if (strcmp(a, "--seed") == 0) {
            if (!ag_cli_int("chaos", a, val, 0, 1L << 62, &v)) return AG_EXIT_USAGE;
            o.seed = (uint64_t)v;
        } else if (!ag_chaos_fault_set(&o.faults, a + 2, val, msg, sizeof msg)) {
            return strncmp(msg, "unknown fault", 13) == 0 ? USAGE("unknown option '%s' (try 'autoglm chaos --help')", a)
                                                         : USAGE("--%s", msg);
        }
    }
    if (!o.listen_host || !o.upstream_host) return USAGE("needs --listen HOST:PORT and --upstream HOST:PORT");
    signal(SIGPIPE, SIG_IGN);
    return ag_chaos_run(&o);
}
