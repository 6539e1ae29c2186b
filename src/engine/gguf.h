/*
 * gguf.h - GGUF (v2/v3) model files: a validating reader over a mapped file
 * or a memory buffer, and a writer.
 *
 * Layout (little-endian; llama.cpp's ggml/docs/gguf.md):
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x { string key | u32 type | value }            string = u64 len + bytes
 *   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   zero padding to `general.alignment` (default 32) | tensor data, each tensor aligned
 *
 * The reader trusts nothing: every count, length, type, offset and size is
 * checked against the bytes that remain before it is used, and a failure
 * names what was wrong and where.  After a successful open, every kv and
 * tensor points into the mapping (no copies), strings are spans (not
 * NUL-terminated), and every tensor's bytes lie inside the file.  String
 * arrays get an offset table at open so element i is O(1) (token vocabularies
 * are 32k-150k strings).
 *
 * The writer reproduces the standard layout (keys and tensors in insertion
 * order, tensors packed in order with zero padding to the alignment), so a
 * file read and written back is byte-identical.
 */
#ifndef AG_ENGINE_GGUF_H
#define AG_ENGINE_GGUF_H

#include "autoglm/status.h"
#include "base/buf.h"
#include "base/str.h"
#include "engine/dtype.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AG_GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define AG_GGUF_DEFAULT_ALIGNMENT 32
#define AG_GGUF_MAX_DIMS 4

typedef enum ag_gguf_type {
    AG_GGUF_U8 = 0,
    AG_GGUF_I8 = 1,
    AG_GGUF_U16 = 2,
    AG_GGUF_I16 = 3,
    AG_GGUF_U32 = 4,
    AG_GGUF_I32 = 5,
    AG_GGUF_F32 = 6,
    AG_GGUF_BOOL = 7,
    AG_GGUF_STRING = 8,
    AG_GGUF_ARRAY = 9,
    AG_GGUF_U64 = 10,
    AG_GGUF_I64 = 11,
    AG_GGUF_F64 = 12,
    AG_GGUF_TYPE_COUNT
} ag_gguf_type;

typedef struct ag_gguf_kv {
    ag_str key;
    ag_gguf_type type;
    ag_gguf_type arr_type;   /* element type when type is AG_GGUF_ARRAY */
    uint64_t arr_len;        /* elements when an array */
    const uint8_t *value;    /* the encoded value in the file (scalar, string, or first element) */
    const uint64_t *str_off; /* string arrays: byte offset of element i from value (owned by the file) */
} ag_gguf_kv;

typedef struct ag_gguf_tensor {
    ag_str name;
    uint32_t n_dims;
    uint64_t ne[AG_GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused dims are 1 */
    ag_dtype type;
    uint64_t offset;  /* from the start of the data section */
    uint64_t n_bytes;
    const void *data; /* inside the mapping */
} ag_gguf_tensor;

typedef struct ag_gguf_file ag_gguf_file;

/* Map path read-only and validate it.  *out is owned by the caller: ag_gguf_close. */
ag_status ag_gguf_open(const char *path, ag_gguf_file **out, ag_err *err);
/* Validate data[0..size) in place (the buffer must outlive the file object). */
ag_status ag_gguf_parse(const void *data, size_t size, ag_gguf_file **out, ag_err *err);
void ag_gguf_close(ag_gguf_file *f);

uint32_t ag_gguf_version(const ag_gguf_file *f);
uint32_t ag_gguf_alignment(const ag_gguf_file *f);
size_t ag_gguf_n_kv(const ag_gguf_file *f);
const ag_gguf_kv *ag_gguf_kv_at(const ag_gguf_file *f, size_t i);
const ag_gguf_kv *ag_gguf_find(const ag_gguf_file *f, const char *key);
size_t ag_gguf_n_tensors(const ag_gguf_file *f);
const ag_gguf_tensor *ag_gguf_tensor_at(const ag_gguf_file *f, size_t i);
const ag_gguf_tensor *ag_gguf_find_tensor(const ag_gguf_file *f, const char *name);
size_t ag_gguf_data_offset(const ag_gguf_file *f);

/* Typed reads.  Integers accept any integer type whose value fits (gguf-py writes u32 where the spec
 * says u64, and the reverse); false when absent, of another kind, or out of range. */
bool ag_gguf_get_u64(const ag_gguf_file *f, const char *key, uint64_t *out);
bool ag_gguf_get_u32(const ag_gguf_file *f, const char *key, uint32_t *out);
bool ag_gguf_get_f32(const ag_gguf_file *f, const char *key, float *out);
bool ag_gguf_get_bool(const ag_gguf_file *f, const char *key, bool *out);
bool ag_gguf_get_str(const ag_gguf_file *f, const char *key, ag_str *out);
/* Scalar value of kv as above (kv not an array). */
bool ag_gguf_kv_u64(const ag_gguf_kv *kv, uint64_t *out);
bool ag_gguf_kv_f64(const ag_gguf_kv *kv, double *out);
/* Element i of a string array. */
ag_str ag_gguf_arr_str(const ag_gguf_kv *kv, uint64_t i);
/* Size in bytes of one scalar of type t (0 for strings and arrays). */
size_t ag_gguf_type_size(ag_gguf_type t);
const char *ag_gguf_type_name(ag_gguf_type t);

/* ---- writer ------------------------------------------------------------ */

typedef struct ag_gguf_writer ag_gguf_writer;

ag_gguf_writer *ag_gguf_writer_create(uint32_t alignment); /* 0: the default (32) */
void ag_gguf_writer_destroy(ag_gguf_writer *w);
/* Metadata in insertion order; keys and values are copied. */
void ag_gguf_writer_set_u32(ag_gguf_writer *w, const char *key, uint32_t v);
void ag_gguf_writer_set_i32(ag_gguf_writer *w, const char *key, int32_t v);
void ag_gguf_writer_set_f32(ag_gguf_writer *w, const char *key, float v);
void ag_gguf_writer_set_bool(ag_gguf_writer *w, const char *key, bool v);
void ag_gguf_writer_set_str(ag_gguf_writer *w, const char *key, const char *s, size_t len);
void ag_gguf_writer_set_arr_str(ag_gguf_writer *w, const char *key, const ag_str *items, size_t n);
void ag_gguf_writer_set_arr_f32(ag_gguf_writer *w, const char *key, const float *items, size_t n);
void ag_gguf_writer_set_arr_i32(ag_gguf_writer *w, const char *key, const int32_t *items, size_t n);
/* Copy a kv from a file as it is encoded there (for quantize and round trips). */
void ag_gguf_writer_copy_kv(ag_gguf_writer *w, const ag_gguf_kv *kv);
/* A tensor; data (n_bytes as the type and shape require) is borrowed until the write. */
ag_status ag_gguf_writer_add_tensor(ag_gguf_writer *w, const char *name, ag_dtype type, uint32_t n_dims,
                                    const uint64_t *ne, const void *data);
/*
 * A tensor whose bytes are produced at write time: fill(ctx, dst, n_bytes) writes them into a
 * buffer the writer owns, one tensor at a time, so a converter never holds the whole model.
 */
typedef ag_status (*ag_gguf_fill_fn)(void *ctx, void *dst, uint64_t n_bytes);
ag_status ag_gguf_writer_add_tensor_fill(ag_gguf_writer *w, const char *name, ag_dtype type, uint32_t n_dims,
                                         const uint64_t *ne, ag_gguf_fill_fn fill, void *ctx);
/* The whole file into out, or to path (written to path.tmp then renamed). */
ag_status ag_gguf_writer_to_buf(ag_gguf_writer *w, ag_buf *out);
ag_status ag_gguf_writer_to_file(ag_gguf_writer *w, const char *path);

#endif
