// peer_simdjson.cpp - simdjson's DOM API behind a C interface for bench_json.
// The parser object is reused across calls (simdjson's recommended, fastest
// use), and the input is pre-padded by the caller, so simdjson is measured
// at its best.
#include <simdjson.h>

#include <cstring>

extern "C" {
#include "peer_simdjson.h"
}

struct sj_ctx {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
};

extern "C" size_t sj_padding(void) { return simdjson::SIMDJSON_PADDING; }

extern "C" void *sj_create(void) { return new sj_ctx(); }

extern "C" void sj_destroy(void *ctx) { delete static_cast<sj_ctx *>(ctx); }

extern "C" int sj_parse(void *vctx, const char *padded, size_t len) {
    sj_ctx *ctx = static_cast<sj_ctx *>(vctx);
    auto r = ctx->parser.parse(padded, len, false);
    if (r.error()) return -1;
    ctx->doc = r.value_unsafe();
    return 0;
}

extern "C" size_t sj_write_last(void *vctx) {
    sj_ctx *ctx = static_cast<sj_ctx *>(vctx);
    std::string s = simdjson::minify(ctx->doc);
    return s.size();
}

extern "C" const char *sj_implementation(void) {
    return simdjson::get_active_implementation()->name().c_str();
}

#define SJ_STR2(x) #x
#define SJ_STR(x) SJ_STR2(x) // SIMDJSON_VERSION is a bare token sequence like 3.0.1
extern "C" const char *sj_version(void) { return SJ_STR(SIMDJSON_VERSION); }
