/*
 * fuzz_json_parse: any bytes into the JSON parser, with a small depth limit
 * sometimes so the limit paths are exercised; walks the DOM so every node is
 * read (ASan sees any bad span or child pointer).
 */
#include "json/json.h"

#include <string.h>

static size_t walk(const ag_json_val *v) {
    size_t n = 1;
    switch (ag_json_type_of(v)) {
    case AG_JSON_STRING: {
        ag_str s = ag_json_str(v);
        for (size_t i = 0; i < s.n; i++) n += (unsigned char)s.p[i] == 0xFF; /* touch every byte */
        break;
    }
    case AG_JSON_ARRAY:
        for (size_t i = 0; i < ag_json_len(v); i++) n += walk(ag_json_arr_at(v, i));
        break;
    case AG_JSON_OBJECT:
        for (size_t i = 0; i < ag_json_len(v); i++) {
            const ag_json_member *m = &v->u.members[i];
            /* every key must be found again, at its own value (duplicates were merged) */
            if (ag_json_obj_get(v, m->key.u.s, m->key.len) != &m->val) __builtin_trap();
            n += walk(&m->val);
        }
        break;
    default: break;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_arena arena;
    ag_arena_init(&arena, 0);
    ag_json_opts opts = {.max_depth = size && data[0] == '[' ? 8 : 0};
    ag_json_val *root;
    ag_json_err err;
    if (ag_json_parse((const char *)data, size, &opts, &arena, &root, &err) == AG_OK) {
        walk(root);
    } else if (err.offset > size || !err.reason || err.line == 0 || err.col == 0) {
        __builtin_trap(); /* every error names a place inside (or just past) the input */
    }
    ag_arena_deinit(&arena);
    return 0;
}
