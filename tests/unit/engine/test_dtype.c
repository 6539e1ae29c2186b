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

static uint64_t fnv1a(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/*
 * The bytes llama.cpp makes (ggml_quantize_chunk with no importance matrix,
 * c392e509, on these inputs, hashed with FNV-1a): ours must be the same, so
 * a file from `autoglm quantize` is the file llama-quantize writes.
 */
static void test_kquant_bytes_match_ggml(void **state) {
    (void)state;
    enum { N = 4096 };
    static float x[N], a[N], back[N];
    static uint8_t q[N * 2];
    ag_test_kquant_inputs(x, a, N);
    static const struct {
        ag_dtype t;
        uint64_t bytes, fnv;
        double tol; /* round trip: max |x - y| relative to the row's max |x| */
    } cases[] = {
        {AG_DTYPE_Q4_1, 2560, 0x2db74b1ccd05037eull, 1.0 / 15},  {AG_DTYPE_Q5_0, 2816, 0x17ea8110b45bcb16ull, 1.0 / 16},
        {AG_DTYPE_Q5_1, 3072, 0x580afc24d8a89cd1ull, 1.0 / 31},  {AG_DTYPE_Q4_K, 2304, 0x62fcc51d7fa647daull, 1.0 / 10},
        {AG_DTYPE_Q5_K, 2816, 0x66075dfb9d7a744eull, 1.0 / 20},  {AG_DTYPE_Q6_K, 3360, 0xb0135bbb1b66c18bull, 1.0 / 40},
        {AG_DTYPE_Q2_K, 1344, 0x3163f1799d871b42ull, 1.0 / 2.5}, {AG_DTYPE_Q3_K, 1760, 0xb681ab0407007e1dull, 1.0 / 5},
        {AG_DTYPE_IQ4_NL, 2304, 0x596c101c099e6934ull, 1.0 / 8},
    };
    float amax = 0;
    for (int i = 0; i < N; i++) amax = fmaxf(amax, fabsf(x[i]));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint64_t bytes;
        assert_true(ag_dtype_bytes(cases[c].t, N, &bytes));
        assert_int_equal(bytes, cases[c].bytes);
        ag_dtype_from_f32(cases[c].t, x, q, N);
        if (fnv1a(q, bytes) != cases[c].fnv)
            fail_msg("%s: bytes differ from ggml's (fnv 0x%016llx)", ag_dtype_name(cases[c].t),
                     (unsigned long long)fnv1a(q, bytes));
        ag_dtype_to_f32(cases[c].t, q, back, N);
        double err = 0;
        for (int i = 0; i < N; i++) err = fmax(err, fabs((double)x[i] - back[i]));
        if (err > cases[c].tol * amax) fail_msg("%s: round-trip error %g > %g", ag_dtype_name(cases[c].t), err, cases[c].tol * amax);
    }
    ag_block_q8_k k8[N / 256];
    ag_dtype_from_f32(AG_DTYPE_Q8_K, a, k8, N);
    assert_true(fnv1a(k8, sizeof k8) == 0xfd4a9e72972255baull);
    for (int b = 0; b < N / 256; b++) { /* bsums are the 16-element sums */
        int s = 0;
        for (int i = 0; i < 16; i++) s += k8[b].qs[i];
        assert_int_equal(k8[b].bsums[0], s);
    }
}

/* Hand-checkable Q4_K/Q6_K blocks: the 6-bit scale packing and the level layouts. */
static void test_kquant_layouts(void **state) {
    (void)state;
    ag_block_q4_k b4;
    memset(&b4, 0, sizeof b4);
    /* sub-block j: scale j + 1 (j < 4 plain; j >= 4 split: low nibble in byte j + 4, high bits atop byte j - 4) */
    uint8_t sc, m;
    for (int j = 0; j < 8; j++) {
        int s = j + 40, mn = 63 - j;
        if (j < 4) {
            b4.scales[j] = (uint8_t)s, b4.scales[j + 4] = (uint8_t)mn;
        } else {
            b4.scales[j + 4] = (uint8_t)((s & 15) | (mn & 15) << 4);
            b4.scales[j - 4] |= (uint8_t)((s >> 4) << 6);
            b4.scales[j] |= (uint8_t)((mn >> 4) << 6);
        }
    }
    for (int j = 0; j < 8; j++) {
        ag_q4k_scale_min(j, b4.scales, &sc, &m);
        assert_int_equal(sc, j + 40);
        assert_int_equal(m, 63 - j);
    }
    b4.d = ag_f32_to_f16(1.0f), b4.dmin = ag_f32_to_f16(0.0f);
    b4.qs[0] = 0x3A;  /* element 0 (sub-block 0) = 10, element 32 (sub-block 1) = 3 */
    b4.qs[32] = 0x05; /* element 64 (sub-block 2) = 5 */
    float y[256];
    ag_dtype_to_f32(AG_DTYPE_Q4_K, &b4, y, 256);
    assert_true(y[0] == 400.0f && y[32] == 123.0f && y[64] == 210.0f && y[1] == 0.0f);
    ag_block_q6_k b6;
    memset(&b6, 0, sizeof b6);
    b6.d = ag_f32_to_f16(0.5f);
    for (int j = 0; j < 16; j++) b6.scales[j] = (int8_t)(j - 8);
    b6.ql[0] = 0x21;  /* element 0: low 4 bits 1; element 64: 2 */
    b6.qh[0] = 0x0B;  /* element 0: high bits 3 (-> 49 - 32 = 17); element 32: 2 (-> 32 - 32 = 0) */
    b6.ql[64] = 0x0F; /* second half, element 128: 15, high bits 0 -> -17 */
    ag_dtype_to_f32(AG_DTYPE_Q6_K, &b6, y, 256);
    assert_true(y[0] == 0.5f * -8 * 17 && y[32] == 0.0f && y[64] == 0.5f * -4 * (2 - 32) && y[128] == 0.5f * 0 * -17);
    assert_true(y[1] == 0.5f * -8 * -32);
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
    assert_int_equal(ag_dtype_parse("q4_k"), AG_DTYPE_Q4_K);
    assert_int_equal(ag_dtype_parse("q2_k"), AG_DTYPE_Q2_K);
    assert_int_equal(ag_dtype_parse("iq4_xs"), -1);
    assert_int_equal(ag_dtype_parse("q8_k"), -1); /* activations only */
    assert_true(ag_dtype_supported(12));
    assert_false(ag_dtype_supported(23) || ag_dtype_supported(AG_DTYPE_Q8_K)); /* iq4_xs; q8_k */
    assert_true(ag_dtype_bytes(AG_DTYPE_Q4_K, 512, &bytes) && bytes == 288);
    assert_false(ag_dtype_bytes(AG_DTYPE_Q6_K, 288, &bytes)); /* 256-element super-blocks */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_all_values_round_trip), cmocka_unit_test(test_f32_to_f16_matches_hardware),
        cmocka_unit_test(test_bf16),                     cmocka_unit_test(test_block_layouts),
        cmocka_unit_test(test_quantization_error_bounds), cmocka_unit_test(test_sizes_and_names),
        cmocka_unit_test(test_kquant_bytes_match_ggml),   cmocka_unit_test(test_kquant_layouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
