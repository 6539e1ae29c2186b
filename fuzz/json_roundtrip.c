/*
 * fuzz_json_roundtrip: whatever parses must write (compact and pretty) and
 * parse again to an equal value, and the compact text must be a fixed point.
 */
#include "json/json.h"

#include <string.h>

static void write_value(const ag_json_val *v, uint8_t indent, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, indent, AG_UTF8_REJECT);
    ag_jw_value(&w, v);
    if (out->err != AG_OK) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_arena arena;
    ag_arena_init(&arena, 0);
    ag_json_val *v1, *v2, *v3;
    if (ag_json_parse((const char *)data, size, NULL, &arena, &v1, NULL) == AG_OK) {
        ag_buf compact, pretty, again;
        ag_buf_init(&compact);
        ag_buf_init(&pretty);
        ag_buf_init(&again);
        write_value(v1, 0, &compact);
        write_value(v1, 2, &pretty);
        if (ag_json_parse(compact.data, compact.len, NULL, &arena, &v2, NULL) != AG_OK) __builtin_trap();
        if (ag_json_parse(pretty.data, pretty.len, NULL, &arena, &v3, NULL) != AG_OK) __builtin_trap();
        if (!ag_json_equal(v1, v2) || !ag_json_equal(v1, v3)) __builtin_trap();
        write_value(v2, 0, &again);
        if (again.len != compact.len || memcmp(again.data, compact.data, compact.len) != 0) __builtin_trap();
        ag_buf_deinit(&compact);
        ag_buf_deinit(&pretty);
        ag_buf_deinit(&again);
    }
    ag_arena_deinit(&arena);
    return 0;
}
