/*
 * gguf.c - GGUF reader and writer; see gguf.h for the layout and contract.
 *
 * Reader: a cursor over [base, base + size) whose every read first checks the
 * bytes left (need()), so no length field is ever trusted.  Counts are bounded
 * by what the remaining bytes could hold before anything is allocated for
 * them, which keeps a 20-byte file from asking for terabytes.  Everything the
 * reader allocates lives in one arena owned by the file object.
 *
 * Writer: collects keys (encoded at set time) and tensors (borrowed data), then
 * emits the file through one sink, so writing to memory (tests) and to disk
 * (streamed, never holding the whole model twice) share the code.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine/gguf.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/map.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "GGUF files are little-endian; this reader reads them in place"
#endif

#define MAX_NAME 63 /* llama.cpp's GGML_MAX_NAME (64) less the NUL */

struct ag_gguf_file {
    const uint8_t *base;
    size_t size;
    void *map; /* non-NULL when ag_gguf_open mapped the file */
    uint32_t version, alignment;
    size_t n_kv, n_tensors, data_offset;
    ag_gguf_kv *kv;
    ag_gguf_tensor *tensors;
    ag_map kv_index, tensor_index; /* name -> entry; keys point into the mapping */
    ag_arena arena;
};

static const uint8_t type_sizes[AG_GGUF_TYPE_COUNT] = {
    [AG_GGUF_U8] = 1,  [AG_GGUF_I8] = 1,  [AG_GGUF_U16] = 2, [AG_GGUF_I16] = 2, [AG_GGUF_U32] = 4,
    [AG_GGUF_I32] = 4, [AG_GGUF_F32] = 4, [AG_GGUF_BOOL] = 1, [AG_GGUF_U64] = 8, [AG_GGUF_I64] = 8,
    [AG_GGUF_F64] = 8,
};

size_t ag_gguf_type_size(ag_gguf_type t) { return (unsigned)t < AG_GGUF_TYPE_COUNT ? type_sizes[t] : 0; }

const char *ag_gguf_type_name(ag_gguf_type t) {
    static const char *const names[AG_GGUF_TYPE_COUNT] = {"u8",   "i8",  "u16",    "i16",   "u32", "i32", "f32",
                                                          "bool", "str", "array", "u64", "i64", "f64"};
    return (unsigned)t < AG_GGUF_TYPE_COUNT ? names[t] : "unknown";
}

/* ---- reader ------------------------------------------------------------ */

typedef struct reader {
    const uint8_t *base;
    size_t size, pos;
    ag_err *err;
} reader;

static ag_status failf(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ag_status failf(reader *r, const char *fmt, ...) {
    if (r->err) {
        int n = snprintf(r->err->msg, sizeof r->err->msg, "offset %zu: ", r->pos);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err->msg + n, sizeof r->err->msg - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return AG_EINVAL;
}

static inline bool need(const reader *r, uint64_t n) { return n <= r->size - r->pos; }

static ag_status read_u32(reader *r, uint32_t *v, const char *what) {
    *v = 0;
    if (!need(r, 4)) return failf(r, "file ends inside %s", what);
    memcpy(v, r->base + r->pos, 4);
    r->pos += 4;
    return AG_OK;
}

static ag_status read_u64(reader *r, uint64_t *v, const char *what) {
    *v = 0;
    if (!need(r, 8)) return failf(r, "file ends inside %s", what);
    memcpy(v, r->base + r->pos, 8);
    r->pos += 8;
    return AG_OK;
}

static ag_status read_str(reader *r, ag_str *s, const char *what) {
    uint64_t len;
    if (read_u64(r, &len, what) != AG_OK) return AG_EINVAL;
    if (!need(r, len)) return failf(r, "%s length %llu runs past the end of the file", what, (unsigned long long)len);
    s->p = (const char *)r->base + r->pos;
    s->n = (size_t)len;
    r->pos += (size_t)len;
    return AG_OK;
}

static ag_status read_value(reader *r, ag_gguf_file *f, ag_gguf_kv *kv) {
    const int kl = (int)(kv->key.n > 80 ? 80 : kv->key.n);
    if ((unsigned)kv->type >= AG_GGUF_TYPE_COUNT)
        return failf(r, "key '%.*s': unknown value type %u", kl, kv->key.p, (unsigned)kv->type);
    if (kv->type != AG_GGUF_ARRAY) {
        kv->value = r->base + r->pos;
        if (kv->type == AG_GGUF_STRING) {
            ag_str s;
            return read_str(r, &s, "a string value");
        }
        if (!need(r, type_sizes[kv->type])) return failf(r, "key '%.*s': file ends inside its value", kl, kv->key.p);
        r->pos += type_sizes[kv->type];
        return AG_OK;
    }
    uint32_t et;
    if (read_u32(r, &et, "an array type") != AG_OK || read_u64(r, &kv->arr_len, "an array length") != AG_OK)
        return AG_EINVAL;
    kv->arr_type = (ag_gguf_type)et;
    if (et == AG_GGUF_ARRAY) return failf(r, "key '%.*s': nested arrays are not supported", kl, kv->key.p);
    if (et >= AG_GGUF_TYPE_COUNT) return failf(r, "key '%.*s': unknown array element type %u", kl, kv->key.p, et);
    kv->value = r->base + r->pos;
    if (et != AG_GGUF_STRING) {
        if (kv->arr_len > (r->size - r->pos) / type_sizes[et])
            return failf(r, "key '%.*s': array of %llu elements runs past the end of the file", kl, kv->key.p,
                         (unsigned long long)kv->arr_len);
        r->pos += (size_t)kv->arr_len * type_sizes[et];
        return AG_OK;
    }
    if (kv->arr_len > (r->size - r->pos) / 8) /* each string needs at least its length field */
        return failf(r, "key '%.*s': array of %llu strings runs past the end of the file", kl, kv->key.p,
                     (unsigned long long)kv->arr_len);
    uint64_t *off = ag_arena_try_alloc(&f->arena, (size_t)kv->arr_len * sizeof *off + 1);
    if (!off) return failf(r, "out of memory for the offsets of '%.*s'", kl, kv->key.p), AG_NOMEM;
    const size_t start = r->pos;
    for (uint64_t i = 0; i < kv->arr_len; i++) {
        off[i] = r->pos - start;
        ag_str s;
        if (read_str(r, &s, "an array string") != AG_OK) return AG_EINVAL;
    }
    kv->str_off = off;
    return AG_OK;
}

static ag_status read_tensor_info(reader *r, ag_gguf_tensor *t) {
    if (read_str(r, &t->name, "a tensor name") != AG_OK) return AG_EINVAL;
    const int nl = (int)(t->name.n > 80 ? 80 : t->name.n);
    if (t->name.n > MAX_NAME) return failf(r, "tensor name '%.*s...' is longer than %d bytes", nl, t->name.p, MAX_NAME);
    if (memchr(t->name.p, '\0', t->name.n)) return failf(r, "a tensor name contains a NUL byte"); /* looked up as C strings */
    if (read_u32(r, &t->n_dims, "a tensor's dimension count") != AG_OK) return AG_EINVAL;
    if (t->n_dims == 0 || t->n_dims > AG_GGUF_MAX_DIMS)
        return failf(r, "tensor '%.*s': %u dimensions (1 to %d allowed)", nl, t->name.p, t->n_dims, AG_GGUF_MAX_DIMS);
    uint64_t n = 1;
    for (uint32_t d = 0; d < AG_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (read_u64(r, &t->ne[d], "a tensor dimension") != AG_OK) return AG_EINVAL;
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX / n)
            return failf(r, "tensor '%.*s': dimension %u is %llu (zero or too large)", nl, t->name.p, d,
                         (unsigned long long)t->ne[d]);
        n *= t->ne[d];
    }
    uint32_t type;
    if (read_u32(r, &type, "a tensor type") != AG_OK) return AG_EINVAL;
    if (!ag_dtype_supported(type))
        return failf(r, "tensor '%.*s': type %s (%u) is not supported (supported: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k)", nl,
                     t->name.p, ag_dtype_name(type), type);
    t->type = (ag_dtype)type;
    if (t->ne[0] % ag_dtype_block_elems(t->type) != 0)
        return failf(r, "tensor '%.*s': row of %llu elements is not a whole number of %s blocks", nl, t->name.p,
                     (unsigned long long)t->ne[0], ag_dtype_name(type));
    if (!ag_dtype_bytes(t->type, n, &t->n_bytes)) return failf(r, "tensor '%.*s': size overflows", nl, t->name.p);
    return read_u64(r, &t->offset, "a tensor offset");
}

ag_status ag_gguf_parse(const void *data, size_t size, ag_gguf_file **out, ag_err *err) {
    reader r = {data, size, 0, err};
    ag_gguf_file *f = ag_xcalloc(1, sizeof *f);
    f->base = data;
    f->size = size;
    ag_arena_init(&f->arena, 0);
    ag_map_init(&f->kv_index);
    ag_map_init(&f->tensor_index);
    ag_status st = AG_EINVAL;
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    if (read_u32(&r, &magic, "the header") != AG_OK) goto fail;
    if (magic != AG_GGUF_MAGIC) {
        r.pos = 0;
        failf(&r, "not a GGUF file (magic bytes are not \"GGUF\")");
        goto fail;
    }
    if (read_u32(&r, &f->version, "the header") != AG_OK) goto fail;
    if (f->version != 2 && f->version != 3) {
        failf(&r, "GGUF version %u is not supported (2 and 3 are)", f->version);
        goto fail;
    }
    if (read_u64(&r, &n_tensors, "the header") != AG_OK || read_u64(&r, &n_kv, "the header") != AG_OK) goto fail;
    /* a kv takes >= 12 bytes and a tensor info >= 28: bound the counts before allocating */
    if (n_kv > (size - r.pos) / 12 || n_tensors > (size - r.pos) / 28) {
        failf(&r, "header claims %llu keys and %llu tensors, more than the file can hold", (unsigned long long)n_kv,
              (unsigned long long)n_tensors);
        goto fail;
    }
    f->n_kv = (size_t)n_kv;
    f->n_tensors = (size_t)n_tensors;
    f->kv = ag_arena_try_alloc(&f->arena, f->n_kv * sizeof *f->kv + 1);
    f->tensors = ag_arena_try_alloc(&f->arena, f->n_tensors * sizeof *f->tensors + 1);
    if (!f->kv || !f->tensors) {
        st = AG_NOMEM;
        goto fail;
    }
    memset(f->kv, 0, f->n_kv * sizeof *f->kv);
    memset(f->tensors, 0, f->n_tensors * sizeof *f->tensors);
    for (size_t i = 0; i < f->n_kv; i++) {
        ag_gguf_kv *kv = &f->kv[i];
        uint32_t type;
        if (read_str(&r, &kv->key, "a key") != AG_OK || read_u32(&r, &type, "a value type") != AG_OK) goto fail;
        kv->type = (ag_gguf_type)type;
        if ((st = read_value(&r, f, kv)) != AG_OK) goto fail;
        st = AG_EINVAL;
        if (ag_map_put(&f->kv_index, kv->key.p, kv->key.n, kv)) {
            failf(&r, "key '%.*s' appears twice", (int)(kv->key.n > 80 ? 80 : kv->key.n), kv->key.p);
            goto fail;
        }
    }
    f->alignment = AG_GGUF_DEFAULT_ALIGNMENT;
    const ag_gguf_kv *al = ag_gguf_find(f, "general.alignment");
    if (al) {
        uint64_t a;
        if (!ag_gguf_kv_u64(al, &a) || a == 0 || a > (1u << 30) || (a & (a - 1))) {
            failf(&r, "general.alignment must be a power of two");
            goto fail;
        }
        f->alignment = (uint32_t)a;
    }
    for (size_t i = 0; i < f->n_tensors; i++) {
        ag_gguf_tensor *t = &f->tensors[i];
        if (read_tensor_info(&r, t) != AG_OK) goto fail;
        const int nl = (int)t->name.n;
        if (t->offset % f->alignment) {
            failf(&r, "tensor '%.*s': offset %llu is not a multiple of the alignment %u", nl, t->name.p,
                  (unsigned long long)t->offset, f->alignment);
            goto fail;
        }
        if (ag_map_put(&f->tensor_index, t->name.p, t->name.n, t)) {
            failf(&r, "tensor '%.*s' appears twice", nl, t->name.p);
            goto fail;
        }
    }
    f->data_offset = (r.pos + f->alignment - 1) / f->alignment * f->alignment;
    for (size_t i = 0; i < f->n_tensors; i++) {
        ag_gguf_tensor *t = &f->tensors[i];
        if (f->data_offset > size || t->offset > size - f->data_offset ||
            t->n_bytes > size - f->data_offset - t->offset) {
            failf(&r, "tensor '%.*s': %llu bytes at data offset %llu run past the end of the file (%zu bytes)",
                  (int)t->name.n, t->name.p, (unsigned long long)t->n_bytes, (unsigned long long)t->offset, size);
            goto fail;
        }
        t->data = f->base + f->data_offset + t->offset;
    }
    *out = f;
    return AG_OK;
fail:
    ag_gguf_close(f);
    return st;
}

ag_status ag_gguf_open(const char *path, ag_gguf_file **out, ag_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (err) snprintf(err->msg, sizeof err->msg, "cannot open: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return AG_EIO;
    }
    if (sb.st_size == 0 || !S_ISREG(sb.st_mode)) {
        if (err) snprintf(err->msg, sizeof err->msg, "%s", sb.st_size == 0 ? "empty file" : "not a regular file");
        close(fd);
        return AG_EINVAL;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        if (err) snprintf(err->msg, sizeof err->msg, "cannot map: %s", strerror(errno));
        return AG_EIO;
    }
    ag_status st = ag_gguf_parse(map, (size_t)sb.st_size, out, err);
    if (st != AG_OK) {
        munmap(map, (size_t)sb.st_size);
        return st;
    }
    (*out)->map = map;
    return AG_OK;
}

void ag_gguf_close(ag_gguf_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->size);
    ag_map_deinit(&f->kv_index);
    ag_map_deinit(&f->tensor_index);
    ag_arena_deinit(&f->arena);
    free(f);
}

uint32_t ag_gguf_version(const ag_gguf_file *f) { return f->version; }
uint32_t ag_gguf_alignment(const ag_gguf_file *f) { return f->alignment; }
size_t ag_gguf_n_kv(const ag_gguf_file *f) { return f->n_kv; }
const ag_gguf_kv *ag_gguf_kv_at(const ag_gguf_file *f, size_t i) { return i < f->n_kv ? &f->kv[i] : NULL; }
size_t ag_gguf_n_tensors(const ag_gguf_file *f) { return f->n_tensors; }
size_t ag_gguf_data_offset(const ag_gguf_file *f) { return f->data_offset; }

const ag_gguf_tensor *ag_gguf_tensor_at(const ag_gguf_file *f, size_t i) {
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const ag_gguf_kv *ag_gguf_find(const ag_gguf_file *f, const char *key) {
    return ag_map_get(&f->kv_index, key, strlen(key));
}

const ag_gguf_tensor *ag_gguf_find_tensor(const ag_gguf_file *f, const char *name) {
    return ag_map_get(&f->tensor_index, name, strlen(name));
}

bool ag_gguf_kv_u64(const ag_gguf_kv *kv, uint64_t *out) {
    if (!kv) return false;
    const uint8_t *v = kv->value;
    switch (kv->type) {
    case AG_GGUF_U8: *out = v[0]; return true;
    case AG_GGUF_U16: { uint16_t x; memcpy(&x, v, 2); *out = x; return true; }
    case AG_GGUF_U32: { uint32_t x; memcpy(&x, v, 4); *out = x; return true; }
    case AG_GGUF_U64: memcpy(out, v, 8); return true;
    case AG_GGUF_I8: { int8_t x = (int8_t)v[0]; if (x < 0) return false; *out = (uint64_t)x; return true; }
    case AG_GGUF_I16: { int16_t x; memcpy(&x, v, 2); if (x < 0) return false; *out = (uint64_t)x; return true; }
    case AG_GGUF_I32: { int32_t x; memcpy(&x, v, 4); if (x < 0) return false; *out = (uint64_t)x; return true; }
    case AG_GGUF_I64: { int64_t x; memcpy(&x, v, 8); if (x < 0) return false; *out = (uint64_t)x; return true; }
    default: return false;
    }
}

bool ag_gguf_kv_f64(const ag_gguf_kv *kv, double *out) {
    if (!kv) return false;
    if (kv->type == AG_GGUF_F32) {
        float x;
        memcpy(&x, kv->value, 4);
        *out = x;
        return true;
    }
    if (kv->type == AG_GGUF_F64) {
        memcpy(out, kv->value, 8);
        return true;
    }
    return false;
}

bool ag_gguf_get_u64(const ag_gguf_file *f, const char *key, uint64_t *out) {
    return ag_gguf_kv_u64(ag_gguf_find(f, key), out);
}

bool ag_gguf_get_u32(const ag_gguf_file *f, const char *key, uint32_t *out) {
    uint64_t v;
    if (!ag_gguf_get_u64(f, key, &v) || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

bool ag_gguf_get_f32(const ag_gguf_file *f, const char *key, float *out) {
    double d;
    if (!ag_gguf_kv_f64(ag_gguf_find(f, key), &d)) return false;
    *out = (float)d;
    return true;
}

bool ag_gguf_get_bool(const ag_gguf_file *f, const char *key, bool *out) {
    const ag_gguf_kv *kv = ag_gguf_find(f, key);
    if (!kv || kv->type != AG_GGUF_BOOL) return false;
    *out = kv->value[0] != 0;
    return true;
}

static ag_str str_at(const uint8_t *p) {
    uint64_t len;
    memcpy(&len, p, 8);
    return (ag_str){(const char *)p + 8, (size_t)len};
}

bool ag_gguf_get_str(const ag_gguf_file *f, const char *key, ag_str *out) {
    const ag_gguf_kv *kv = ag_gguf_find(f, key);
    if (!kv || kv->type != AG_GGUF_STRING) return false;
    *out = str_at(kv->value);
    return true;
}

ag_str ag_gguf_arr_str(const ag_gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != AG_GGUF_ARRAY || kv->arr_type != AG_GGUF_STRING || i >= kv->arr_len)
        return (ag_str){NULL, 0};
    return str_at(kv->value + kv->str_off[i]);
}

/* ---- writer ------------------------------------------------------------ */

typedef struct wkv {
    char *key;
    uint32_t type;
    ag_buf value; /* encoded exactly as in the file */
} wkv;

typedef struct wtensor {
    char *name;
    ag_dtype type;
    uint32_t n_dims;
    uint64_t ne[AG_GGUF_MAX_DIMS];
    const void *data;     /* borrowed bytes, or NULL when fill produces them */
    ag_gguf_fill_fn fill;
    void *fill_ctx;
    uint64_t n_bytes;
} wtensor;

struct ag_gguf_writer {
    uint32_t alignment;
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
};

ag_gguf_writer *ag_gguf_writer_create(uint32_t alignment) {
    ag_gguf_writer *w = ag_xcalloc(1, sizeof *w);
    w->alignment = alignment ? alignment : AG_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void ag_gguf_writer_destroy(ag_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        ag_buf_deinit(&w->kvs[i].value);
    }
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* The entry for key, emptied for a new value (a key set twice keeps its first position). */
static ag_buf *kv_slot(ag_gguf_writer *w, const char *key, uint32_t type) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0) {
            w->kvs[i].type = type;
            ag_buf_reset(&w->kvs[i].value);
            return &w->kvs[i].value;
        }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? w->cap_kv * 2 : 32;
        w->kvs = ag_xrealloc(w->kvs, w->cap_kv * sizeof *w->kvs);
    }
    wkv *kv = &w->kvs[w->n_kv++];
    kv->key = ag_xstrdup(key);
    kv->type = type;
    ag_buf_init(&kv->value);
    return &kv->value;
}

static void put_u32(ag_buf *b, uint32_t v) { ag_buf_append(b, &v, 4); }
static void put_u64(ag_buf *b, uint64_t v) { ag_buf_append(b, &v, 8); }
static void put_str(ag_buf *b, const char *s, size_t n) {
    put_u64(b, n);
    ag_buf_append(b, s, n);
}

void ag_gguf_writer_set_u32(ag_gguf_writer *w, const char *key, uint32_t v) { put_u32(kv_slot(w, key, AG_GGUF_U32), v); }
void ag_gguf_writer_set_i32(ag_gguf_writer *w, const char *key, int32_t v) {
    ag_buf_append(kv_slot(w, key, AG_GGUF_I32), &v, 4);
}
void ag_gguf_writer_set_f32(ag_gguf_writer *w, const char *key, float v) {
    ag_buf_append(kv_slot(w, key, AG_GGUF_F32), &v, 4);
}
void ag_gguf_writer_set_bool(ag_gguf_writer *w, const char *key, bool v) {
    ag_buf_append_char(kv_slot(w, key, AG_GGUF_BOOL), v ? 1 : 0);
}
void ag_gguf_writer_set_str(ag_gguf_writer *w, const char *key, const char *s, size_t len) {
    put_str(kv_slot(w, key, AG_GGUF_STRING), s, len);
}

static ag_buf *array_slot(ag_gguf_writer *w, const char *key, ag_gguf_type et, size_t n) {
    ag_buf *b = kv_slot(w, key, AG_GGUF_ARRAY);
    put_u32(b, et);
    put_u64(b, n);
    return b;
}

void ag_gguf_writer_set_arr_str(ag_gguf_writer *w, const char *key, const ag_str *items, size_t n) {
    ag_buf *b = array_slot(w, key, AG_GGUF_STRING, n);
    for (size_t i = 0; i < n; i++) put_str(b, items[i].p, items[i].n);
}
void ag_gguf_writer_set_arr_f32(ag_gguf_writer *w, const char *key, const float *items, size_t n) {
    ag_buf_append(array_slot(w, key, AG_GGUF_F32, n), items, n * 4);
}
void ag_gguf_writer_set_arr_i32(ag_gguf_writer *w, const char *key, const int32_t *items, size_t n) {
    ag_buf_append(array_slot(w, key, AG_GGUF_I32, n), items, n * 4);
}

/* Bytes of a parsed kv's encoded value: scalar, string, or the whole array with its header. */
void ag_gguf_writer_copy_kv(ag_gguf_writer *w, const ag_gguf_kv *kv) {
    char key[512];
    snprintf(key, sizeof key, "%.*s", (int)kv->key.n, kv->key.p);
    ag_buf *b = kv_slot(w, key, kv->type);
    if (kv->type == AG_GGUF_STRING) {
        ag_str s = str_at(kv->value);
        put_str(b, s.p, s.n);
    } else if (kv->type != AG_GGUF_ARRAY) {
        ag_buf_append(b, kv->value, type_sizes[kv->type]);
    } else {
        put_u32(b, kv->arr_type);
        put_u64(b, kv->arr_len);
        size_t bytes;
        if (kv->arr_type != AG_GGUF_STRING) {
            bytes = (size_t)kv->arr_len * type_sizes[kv->arr_type];
        } else if (kv->arr_len == 0) {
            bytes = 0;
        } else { /* up to the end of the last string */
            ag_str last = str_at(kv->value + kv->str_off[kv->arr_len - 1]);
            bytes = (size_t)((const uint8_t *)last.p + last.n - kv->value);
        }
        ag_buf_append(b, kv->value, bytes);
    }
}

static ag_status add_tensor(ag_gguf_writer *w, const char *name, ag_dtype type, uint32_t n_dims, const uint64_t *ne,
                            const void *data, ag_gguf_fill_fn fill, void *fill_ctx) {
    if (strlen(name) > MAX_NAME || n_dims == 0 || n_dims > AG_GGUF_MAX_DIMS || !ag_dtype_supported(type))
        return AG_EINVAL;
    wtensor t = {.type = type, .n_dims = n_dims, .data = data, .fill = fill, .fill_ctx = fill_ctx};
    uint64_t n = 1;
    for (uint32_t d = 0; d < AG_GGUF_MAX_DIMS; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (t.ne[d] == 0 || t.ne[d] > (uint64_t)INT64_MAX / n) return AG_EINVAL;
        n *= t.ne[d];
    }
    if (t.ne[0] % ag_dtype_block_elems(type) || !ag_dtype_bytes(type, n, &t.n_bytes)) return AG_EINVAL;
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return AG_EINVAL;
    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? w->cap_tensors * 2 : 64;
        w->tensors = ag_xrealloc(w->tensors, w->cap_tensors * sizeof *w->tensors);
    }
    t.name = ag_xstrdup(name);
    w->tensors[w->n_tensors++] = t;
    return AG_OK;
}

ag_status ag_gguf_writer_add_tensor(ag_gguf_writer *w, const char *name, ag_dtype type, uint32_t n_dims,
                                    const uint64_t *ne, const void *data) {
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

ag_status ag_gguf_writer_add_tensor_fill(ag_gguf_writer *w, const char *name, ag_dtype type, uint32_t n_dims,
                                         const uint64_t *ne, ag_gguf_fill_fn fill, void *ctx) {
    return add_tensor(w, name, type, n_dims, ne, NULL, fill, ctx);
}

static uint64_t align_up(uint64_t x, uint32_t a) { return (x + a - 1) / a * a; }

typedef ag_status (*sink_fn)(void *ctx, const void *p, size_t n);

/* Header, metadata and tensor infos, padded to the alignment, into b. */
static ag_status encode_head(const ag_gguf_writer *w, ag_buf *b) {
    uint64_t a = AG_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, "general.alignment") == 0 && w->kvs[i].type == AG_GGUF_U32)
            a = *(const uint32_t *)(const void *)w->kvs[i].value.data;
    if (a != w->alignment) return AG_EINVAL; /* a non-default alignment must be stated in the file */
    put_u32(b, AG_GGUF_MAGIC);
    put_u32(b, 3);
    put_u64(b, w->n_tensors);
    put_u64(b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(b, w->kvs[i].key, strlen(w->kvs[i].key));
        put_u32(b, w->kvs[i].type);
        ag_buf_append(b, w->kvs[i].value.data, w->kvs[i].value.len);
        if (w->kvs[i].value.err != AG_OK) return w->kvs[i].value.err;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        put_str(b, t->name, strlen(t->name));
        put_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(b, t->ne[d]);
        put_u32(b, t->type);
        put_u64(b, off);
        off = align_up(off + t->n_bytes, w->alignment);
    }
    static const uint8_t zeros[64];
    size_t pad = (size_t)(align_up(b->len, w->alignment) - b->len);
    while (pad) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        ag_buf_append(b, zeros, k);
        pad -= k;
    }
    return b->err;
}

static ag_status emit(const ag_gguf_writer *w, sink_fn sink, void *ctx) {
    ag_buf head;
    ag_buf_init(&head);
    ag_status st = encode_head(w, &head);
    if (st == AG_OK) st = sink(ctx, head.data, head.len);
    ag_buf_deinit(&head);
    static const uint8_t zeros[64];
    for (size_t i = 0; i < w->n_tensors && st == AG_OK; i++) {
        const wtensor *t = &w->tensors[i];
        if (t->fill) {
            void *tmp = ag_try_malloc((size_t)t->n_bytes);
            st = tmp ? t->fill(t->fill_ctx, tmp, t->n_bytes) : AG_NOMEM;
            if (st == AG_OK) st = sink(ctx, tmp, (size_t)t->n_bytes);
            free(tmp);
        } else {
            st = sink(ctx, t->data, (size_t)t->n_bytes);
        }
        size_t pad = (size_t)(align_up(t->n_bytes, w->alignment) - t->n_bytes);
        while (st == AG_OK && pad) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            st = sink(ctx, zeros, k);
            pad -= k;
        }
    }
    return st;
}

static ag_status buf_sink(void *ctx, const void *p, size_t n) {
    ag_buf_append(ctx, p, n);
    return ((ag_buf *)ctx)->err;
}

static ag_status file_sink(void *ctx, const void *p, size_t n) {
    return fwrite(p, 1, n, ctx) == n ? AG_OK : AG_EIO;
}

ag_status ag_gguf_writer_to_buf(ag_gguf_writer *w, ag_buf *out) { return emit(w, buf_sink, out); }

ag_status ag_gguf_writer_to_file(ag_gguf_writer *w, const char *path) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return AG_EINVAL;
    FILE *f = fopen(tmp, "wb");
    if (!f) return AG_EIO;
    ag_status st = emit(w, file_sink, f);
    if (fclose(f) != 0 && st == AG_OK) st = AG_EIO;
    if (st == AG_OK && rename(tmp, path) != 0) st = AG_EIO;
    if (st != AG_OK) unlink(tmp);
    return st;
}
