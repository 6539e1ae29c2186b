/*
 * hash.h - fast non-cryptographic 64-bit hash for hash tables.
 *
 * Not for anything an attacker can aim at to learn secrets (cache keys that
 * isolate tenants use SHA-256 from libcrypto); a per-table seed keeps
 * crafted-collision attacks on open addressing expensive.
 */
#ifndef AG_BASE_HASH_H
#define AG_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t ag_hash_bytes(const void *p, size_t n, uint64_t seed);

#endif
