/*
 * Tests for src/server/rcache.c: a cache value decodes to its choices and
 * usage, and its stored rest is exactly what a whole response carries after
 * its opening, so opening + rest is a response byte for byte; a value cut
 * short or padded anywhere (a damaged Redis entry) does not decode; the
 * fuzz target's corpus replays.
 */
#include "test.h"

#include "server/rcache.h"

#include <string.h>

static const ag_rcache_choice choices[] = {
    {"Hello \"world\"\n", 14, AG_FINISH_STOP},
    {"caf\xc3\xa9", 5, AG_FINISH_LENGTH},
};
static const ag_api_usage usage = {7, 12, 3};

static void encode(ag_api_kind kind, ag_api_meta *m, ag_buf *value) {
    ag_api_meta_init(m, kind, "tiny", 1);
    ag_buf_init(value);
    ag_rcache_encode(m, choices, 2, &usage, value);
    assert_int_equal(value->err, AG_OK);
}

static void test_opening_and_rest_make_the_response(void **state) {
    (void)state;
    for (int kind = AG_API_CHAT; kind <= AG_API_COMPLETION; kind++) {
        ag_api_meta m;
        ag_buf value, whole, again;
        encode((ag_api_kind)kind, &m, &value);
        ag_rcache_value d;
        assert_true(ag_rcache_decode(value.data, value.len, &d));
        assert_int_equal(d.n, 2);
        assert_memory_equal(d.ch[1].text, "caf\xc3\xa9", 5);
        assert_int_equal(d.ch[0].finish, AG_FINISH_STOP);
        assert_int_equal(d.usage.completion_tokens, 12);
        /* the response a generation would send, against a fresh opening (another id) plus the rest */
        ag_api_choice api[2];
        for (int i = 0; i < 2; i++)
            api[i] = (ag_api_choice){choices[i].text, choices[i].len, ag_api_finish_reason((ag_finish)choices[i].finish), NULL, NULL, 0};
        ag_buf_init(&whole);
        ag_api_meta other;
        ag_api_meta_init(&other, (ag_api_kind)kind, "tiny", 2);
        size_t open = ag_api_response_write(&other, api, 2, &usage, &whole);
        ag_buf_init(&again);
        ag_api_response_open_write(&other, &again);
        assert_int_equal(again.len, open);
        ag_buf_append(&again, d.rest, d.rest_len);
        assert_int_equal(again.len, whole.len);
        assert_memory_equal(again.data, whole.data, whole.len);
        ag_buf_deinit(&value), ag_buf_deinit(&whole), ag_buf_deinit(&again);
    }
}

static void test_damaged_values_do_not_decode(void **state) {
    (void)state;
    ag_api_meta m;
    ag_buf value;
    encode(AG_API_COMPLETION, &m, &value);
    ag_rcache_value d;
    for (size_t n = 0; n < value.len; n++) assert_false(ag_rcache_decode(value.data, n, &d));
    ag_buf_append(&value, "x", 1);
    assert_false(ag_rcache_decode(value.data, value.len, &d));
    uint32_t many = AG_API_MAX_CHOICES + 1;
    memcpy(value.data, &many, sizeof many);
    assert_false(ag_rcache_decode(value.data, value.len - 1, &d));
    ag_buf_deinit(&value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#include "../../../fuzz/rcache_decode.c"

static int replay(const char *data, size_t len, void *ctx) {
    (void)ctx;
    ag_rcache_value v;
    LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    return ag_rcache_decode(data, len, &v);
}

static void test_fuzz_corpus_replays(void **state) {
    (void)state;
    int valid, files = ag_test_for_each_file(AG_SOURCE_DIR "/fuzz/corpus/rcache", replay, NULL, &valid);
    assert_true(files > 0);
    assert_true(valid > 0); /* the seed is a real value */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opening_and_rest_make_the_response),
        cmocka_unit_test(test_damaged_values_do_not_decode),
        cmocka_unit_test(test_fuzz_corpus_replays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
