/* peer_simdjson.h - the C face of peer_simdjson.cpp. */
#ifndef AG_BENCH_PEER_SIMDJSON_H
#define AG_BENCH_PEER_SIMDJSON_H
#include <stddef.h>
size_t sj_padding(void);
void *sj_create(void);
void sj_destroy(void *ctx);
int sj_parse(void *ctx, const char *padded, size_t len); /* 0 on success; keeps the DOM for sj_write_last */
size_t sj_write_last(void *ctx);                         /* serialize the last DOM (minified); its length */
const char *sj_implementation(void);
const char *sj_version(void);                     /* the SIMD kernel simdjson picked (e.g. icelake) */
#endif
