/* Tests for src/engine/dtype.c: half-precision conversions and the Q8_0 / Q4_0 block formats. */
#include "test.h"

#include "engine/dtype.h"

#include <math.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

static float bits_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static void test_f16_all_values_round_trip(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ag_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true((h & 0x7C00) == 0x7C00 && (h & 0x3FF));
            assert_true(isnan(ag_f16_to_f32(ag_f32_to_f16(f))));
            continue;
        }
        assert_int_equal(ag_f32_to_f16(f), h);
    }
    assert_true(ag_f16_to_f32(0x3C00) == 1.0f);
    assert_true(ag_f16_to_f32(0x0001) == 0x1p-24f); /* smallest subnormal */
    assert_true(ag_f16_to_f32(0x7BFF) == 65504.0f);
    assert_int_equal(ag_f32_to_f16(65520.0f), 0x7C00); /* rounds up to infinity */
    assert_int_equal(ag_f32_to_f16(1e-9f), 0);
}

/* Rounding of every float class against the CPU's own conversion (F16C), when it has one. */
static void test_f32_to_f16_matches_hardware(void **state) {
    (void)state;
#if defined(__F16C__)
    uint64_t seed = 11;
    for (int i = 0; i < 2000000; i++) {
        uint32_t x = (uint32_t)ag_test_rand(&seed);
        if (i % 4 == 0) x = (x & 0x80000000u) | (0x33000000u + x % 0x0F000000u); /* around the f16 range */
        float f = bits_f32(x);
        if (isnan(f)) continue;
        uint16_t want = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
        if (ag_f32_to_f16(f) != want) fail_msg("%a: got %04x want %04x", f, ag_f32_to_f16(f), want);
    }
#else
    AG_TEST_NOTE("no F16C in this build; the exhaustive round trip still ran");
#endif
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ag_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        assert_int_equal(ag_f32_to_bf16(f), h);
    }
    assert_int_equal(ag_f32_to_bf16(bits_f32(0x3F808000u)), 0x3F80); /* halfway: to even (down) */
    assert_int_equal(ag_f32_to_bf16(bits_f32(0x3F818000u)), 0x3F82); /* halfway: to even (up) */
    assert_int_equal(ag_f32_to_bf16(bits_f32(0x3F808001u)), 0x3F81); /* above halfway */
    assert_true(isnan(ag_bf16_to_f32(ag_f32_to_bf16(NAN))));
}

/* A known block: x[j] = j - 16.  Bytes as ggml's reference quantizers produce them. */
static void test_block_layouts(void **state) {
    (void)state;
    float x[32], y[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    ag_block_q8_0 q8;
    ag_dtype_from_f32(AG_DTYPE_Q8_0, x, &q8, 32);
    assert_int_equal(q8.d, ag_f32_to_f16(16.0f / 127.0f));
    assert_int_equal(q8.qs[0], -127);
    assert_int_equal(q8.qs[16], 0);
    assert_int_equal(q8.qs[31], 119); /* round(15 * 127 / 16) */
    ag_block_q4_0 q4;
    ag_dtype_from_f32(AG_DTYPE_Q4_0, x, &q4, 32);
    assert_true(ag_f16_to_f32(q4.d) == 2.0f); /* max by magnitude is -16: d = -16 / -8 */
    assert_int_equal(q4.qs[0], 0x80);         /* x[0] = -16 -> 0, x[16] = 0 -> 8 in the high nibble */
    assert_int_equal(q4.qs[15], 0xF8);        /* x[15] = -1 -> (int)(-0.5 + 8.5) = 8, x[31] = 15 -> 16 -> 15 */
    ag_dtype_to_f32(AG_DTYPE_Q4_0, &q4, y, 32);
    assert_true(y[0] == -16.0f && y[15] == 0.0f && y[16] == 0.0f && y[31] == 14.0f);
    uint8_t raw[34];
    memcpy(raw, &q8, sizeof raw);
    assert_int_equal(raw[2], (uint8_t)-127); /* qs follows the 2-byte scale with no padding */
}

/* Round-trip error per type, relative to each block's largest magnitude. */
static void test_quantization_error_bounds(void **state) {
    (void)state;
    enum { N = 32 * 512 };
    static float x[N], y[N];
    static uint8_t q[N * 4];
    uint64_t seed = 3;
    for (int i = 0; i < N; i++) x[i] = (float)((int64_t)(ag_test_rand(&seed) % 2000001) - 1000000) / 1e5f;
    const struct {
        ag_dtype t;
        double tol; /* max |x - y| / block amax */
    } cases[] = {
        {AG_DTYPE_F32, 0}, {AG_DTYPE_F16, 1.0 / 2048}, {AG_DTYPE_BF16, 1.0 / 256},
        {AG_DTYPE_Q8_0, 1.0 / 254 + 1.0 / 2048}, /* half a step of amax/127, plus the fp16 scale */
        /* Q4_0 spans [-8d, 7d] with d = -(signed max)/8: a value of the other sign as large as the
         * max clamps at 7d, one step (amax/8) short; elsewhere the error is half a step */
        {AG_DTYPE_Q4_0, 1.0 / 8 + 1.0 / 512},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ag_dtype_from_f32(cases[c].t, x, q, N);
        ag_dtype_to_f32(cases[c].t, q, y, N);
        for (int b = 0; b < N / 32; b++) {
            double amax = 0, err = 0;
            for (int j = b * 32; j < b * 32 + 32; j++) {
                amax = fmax(amax, fabs(x[j]));
                err = fmax(err, fabs((double)x[j] - y[j]));
            }
            if (err > cases[c].tol * amax) fail_msg("%s: block %d error %g > %g", ag_dtype_name(cases[c].t), b, err, cases[c].tol * amax);
        }
    }
}

static void test_sizes_and_names(void **state) {
    (void)state;
    uint64_t bytes;
    assert_true(ag_dtype_bytes(AG_DTYPE_Q8_0, 64, &bytes) && bytes == 68);
    assert_true(ag_dtype_bytes(AG_DTYPE_Q4_0, 64, &bytes) && bytes == 36);
    assert_false(ag_dtype_bytes(AG_DTYPE_Q8_0, 33, &bytes));
    assert_true(ag_dtype_bytes(AG_DTYPE_BF16, 3, &bytes) && bytes == 6);
    assert_false(ag_dtype_bytes(AG_DTYPE_F32, UINT64_MAX / 2, &bytes));
    assert_string_equal(ag_dtype_name(12), "q4_k");
    assert_string_equal(ag_dtype_name(200), "type-200");
    assert_int_equal(ag_dtype_parse("q8_0"), AG_DTYPE_Q8_0);
    assert_int_equal(ag_dtype_parse("q4_k"), -1);
    assert_false(ag_dtype_supported(12));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_all_values_round_trip), cmocka_unit_test(test_f32_to_f16_matches_hardware),
        cmocka_unit_test(test_bf16),                     cmocka_unit_test(test_block_layouts),
        cmocka_unit_test(test_quantization_error_bounds), cmocka_unit_test(test_sizes_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
