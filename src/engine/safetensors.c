/*
 * safetensors.c - reader for Hugging Face .safetensors files; see
 * safetensors.h.  Files are mapped read-only and tensors point into the
 * mappings, which the set owns until ag_st_close.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine/safetensors.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/map.h"
#include "engine/dtype.h"
#include "json/json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct mapping {
    void *p;
    size_t len;
} mapping;

struct ag_st_set {
    ag_arena arena; /* names and dtype strings */
    ag_st_tensor *tensors;
    size_t n, cap;
    ag_map index; /* name -> tensor index + 1, stored as a pointer-sized integer */
    mapping *maps;
    size_t n_maps;
};

static const struct {
    const char *name;
    int dtype; /* -1: listed, not used by the engine */
    unsigned size;
} st_dtypes[] = {
    {"F32", AG_DTYPE_F32, 4}, {"F16", AG_DTYPE_F16, 2},  {"BF16", AG_DTYPE_BF16, 2}, {"F64", -1, 8},
    {"I64", -1, 8},           {"I32", -1, 4},            {"I16", -1, 2},             {"I8", -1, 1},
    {"U8", -1, 1},            {"BOOL", -1, 1},           {"F8_E4M3", -1, 1},         {"F8_E5M2", -1, 1},
};

static ag_st_set *set_create(void) {
    ag_st_set *s = ag_xcalloc(1, sizeof *s);
    ag_arena_init(&s->arena, 0);
    ag_map_init(&s->index);
    return s;
}

void ag_st_close(ag_st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_maps; i++) munmap(s->maps[i].p, s->maps[i].len);
    free(s->maps);
    free(s->tensors);
    ag_map_deinit(&s->index);
    ag_arena_deinit(&s->arena);
    free(s);
}

size_t ag_st_count(const ag_st_set *s) { return s->n; }
const ag_st_tensor *ag_st_at(const ag_st_set *s, size_t i) { return i < s->n ? &s->tensors[i] : NULL; }

const ag_st_tensor *ag_st_find(const ag_st_set *s, const char *name) {
    uintptr_t i = (uintptr_t)ag_map_get(&s->index, name, strlen(name));
    return i ? &s->tensors[i - 1] : NULL;
}

/* One tensor entry of the header: {"dtype": .., "shape": [..], "data_offsets": [b, e]}. */
static ag_status add_tensor(ag_st_set *s, const char *label, ag_str name, const ag_json_val *v, const uint8_t *data,
                            uint64_t data_size, ag_err *err) {
    const int nl = (int)(name.n > 80 ? 80 : name.n);
    if (memchr(name.p, '\0', name.n)) /* names are C strings downstream (regression: found by the fuzzer) */
        return ag_err_set(err, AG_EINVAL, "%s: a tensor name contains a NUL byte", label);
    ag_str dt = ag_json_str(ag_json_obj_getc(v, "dtype"));
    const ag_json_val *shape = ag_json_obj_getc(v, "shape"), *offs = ag_json_obj_getc(v, "data_offsets");
    if (!dt.p || !ag_json_is(shape, AG_JSON_ARRAY) || !ag_json_is(offs, AG_JSON_ARRAY) || ag_json_len(offs) != 2)
        return ag_err_set(err, AG_EINVAL, "%s: tensor '%.*s' needs dtype, shape and data_offsets [begin, end]", label,
                          nl, name.p);
    size_t k = 0, n_types = sizeof st_dtypes / sizeof st_dtypes[0];
    while (k < n_types && !ag_str_eq_cstr(dt, st_dtypes[k].name)) k++;
    if (k == n_types)
        return ag_err_set(err, AG_EINVAL, "%s: tensor '%.*s' has unknown dtype '%.*s'", label, nl, name.p,
                          (int)(dt.n > 16 ? 16 : dt.n), dt.p);
    if (ag_json_len(shape) > AG_ST_MAX_DIMS)
        return ag_err_set(err, AG_EINVAL, "%s: tensor '%.*s' has more than %d dimensions", label, nl, name.p,
                          AG_ST_MAX_DIMS);
    ag_st_tensor t = {.dtype = st_dtypes[k].dtype, .dtype_name = st_dtypes[k].name, .n_dims = (uint32_t)ag_json_len(shape)};
    uint64_t n = 1;
    for (uint32_t d = 0; d < t.n_dims; d++) {
        int64_t x;
        /* n is 0 after a zero dimension: an empty tensor, and no overflow to check */
        if (!ag_json_get_int(ag_json_arr_at(shape, d), &x) || x < 0 || (n && x && (uint64_t)x > UINT64_MAX / 8 / n))
            return ag_err_set(err, AG_EINVAL, "%s: tensor '%.*s' has an invalid shape", label, nl, name.p);
        t.shape[d] = (uint64_t)x;
        n *= (uint64_t)x;
    }
    int64_t b, e;
    if (!ag_json_get_int(ag_json_arr_at(offs, 0), &b) || !ag_json_get_int(ag_json_arr_at(offs, 1), &e) || b < 0 ||
        e < b || (uint64_t)e > data_size)
        return ag_err_set(err, AG_EINVAL, "%s: tensor '%.*s' data_offsets lie outside the file's %llu data bytes",
                          label, nl, name.p, (unsigned long long)data_size);
    t.n_elems = n;
    t.n_bytes = n * st_dtypes[k].size;
    if ((uint64_t)(e - b) != t.n_bytes)
        return ag_err_set(err, AG_EINVAL, "%s: tensor '%.*s' spans %lld bytes but its shape and dtype need %llu", label,
                          nl, name.p, (long long)(e - b), (unsigned long long)t.n_bytes);
    t.data = data + b;
    char *nm = ag_arena_try_strndup(&s->arena, name.p, name.n);
    if (!nm) return ag_err_set(err, AG_NOMEM, "out of memory");
    t.name = nm;
    if (ag_map_get(&s->index, nm, name.n))
        return ag_err_set(err, AG_EINVAL, "%s: tensor '%.*s' appears twice", label, nl, name.p);
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->tensors = ag_xrealloc(s->tensors, s->cap * sizeof *s->tensors);
    }
    s->tensors[s->n++] = t;
    ag_map_put(&s->index, nm, name.n, (void *)(uintptr_t)s->n);
    return AG_OK;
}

/* Validate one file image and add its tensors to the set; label names it in messages. */
static ag_status add_image(ag_st_set *s, const uint8_t *base, size_t size, const char *label, ag_err *err) {
    uint64_t hlen;
    if (size < 8) return ag_err_set(err, AG_EINVAL, "%s: too small for a safetensors header", label);
    memcpy(&hlen, base, 8);
    if (hlen > size - 8 || hlen > AG_ST_MAX_HEADER)
        return ag_err_set(err, AG_EINVAL, "%s: header length %llu does not fit the file (%zu bytes)", label,
                          (unsigned long long)hlen, size);
    ag_arena a;
    ag_arena_init(&a, 0);
    ag_json_val *root;
    ag_json_err jerr;
    ag_json_opts opts = {.max_depth = 8};
    ag_status st = ag_json_parse((const char *)base + 8, (size_t)hlen, &opts, &a, &root, &jerr);
    if (st != AG_OK) {
        ag_err_set(err, st, "%s: header is not valid JSON at byte %zu: %s", label, 8 + jerr.offset, jerr.reason);
    } else if (!ag_json_is(root, AG_JSON_OBJECT)) {
        st = ag_err_set(err, AG_EINVAL, "%s: header is not a JSON object", label);
    } else {
        for (size_t i = 0; i < ag_json_len(root) && st == AG_OK; i++) {
            const ag_json_member *m = &root->u.members[i];
            ag_str name = ag_json_str(&m->key);
            if (ag_str_eq_cstr(name, "__metadata__")) continue;
            st = add_tensor(s, label, name, &m->val, base + 8 + hlen, size - 8 - hlen, err);
        }
    }
    ag_arena_deinit(&a);
    return st;
}

ag_status ag_st_parse(const void *data, size_t size, ag_st_set **out, ag_err *err) {
    ag_st_set *s = set_create();
    ag_status st = add_image(s, data, size, "safetensors", err);
    if (st != AG_OK) {
        ag_st_close(s);
        return st;
    }
    *out = s;
    return AG_OK;
}

/* Map path into the set and add its tensors. */
static ag_status add_file(ag_st_set *s, const char *path, ag_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return ag_err_set(err, AG_EIO, "%s: cannot open: %s", path, strerror(e));
    }
    if (sb.st_size < 8) {
        close(fd);
        return ag_err_set(err, AG_EINVAL, "%s: too small for a safetensors header", path);
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return ag_err_set(err, AG_EIO, "%s: cannot map: %s", path, strerror(errno));
    s->maps = ag_xrealloc(s->maps, (s->n_maps + 1) * sizeof *s->maps);
    s->maps[s->n_maps++] = (mapping){p, (size_t)sb.st_size};
    return add_image(s, p, (size_t)sb.st_size, path, err);
}

ag_status ag_st_open(const char *path, ag_st_set **out, ag_err *err) {
    ag_st_set *s = set_create();
    ag_status st = add_file(s, path, err);
    if (st != AG_OK) {
        ag_st_close(s);
        return st;
    }
    *out = s;
    return AG_OK;
}

static char *read_small_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && n < (64 << 20) && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            *len = fread(buf, 1, (size_t)n, f);
            buf[*len] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* The shards named by model.safetensors.index.json's weight_map, each opened once. */
static ag_status open_index(ag_st_set *s, const char *dir, const char *index_path, ag_err *err) {
    size_t len = 0;
    char *text = read_small_file(index_path, &len);
    if (!text) return ag_err_set(err, AG_EIO, "%s: cannot read", index_path);
    ag_arena a;
    ag_arena_init(&a, 0);
    ag_json_val *root;
    ag_json_err jerr;
    ag_status st = ag_json_parse(text, len, NULL, &a, &root, &jerr);
    const ag_json_val *wm = st == AG_OK ? ag_json_obj_getc(root, "weight_map") : NULL;
    if (st != AG_OK) st = ag_err_set(err, st, "%s:%zu:%zu: %s", index_path, jerr.line, jerr.col, jerr.reason);
    else if (!ag_json_is(wm, AG_JSON_OBJECT)) st = ag_err_set(err, AG_EINVAL, "%s: no weight_map object", index_path);
    ag_map opened;
    ag_map_init(&opened);
    for (size_t i = 0; st == AG_OK && i < ag_json_len(wm); i++) {
        ag_str shard = ag_json_str(&wm->u.members[i].val);
        if (!shard.p || shard.n == 0 || shard.n > 255 || memchr(shard.p, '/', shard.n) || ag_str_eq_cstr(shard, "..")) {
            st = ag_err_set(err, AG_EINVAL, "%s: weight_map names an invalid shard file", index_path);
            break;
        }
        if (ag_map_get(&opened, shard.p, shard.n)) continue;
        ag_map_put(&opened, shard.p, shard.n, (void *)1);
        char path[4096];
        snprintf(path, sizeof path, "%s/%.*s", dir, (int)shard.n, shard.p);
        st = add_file(s, path, err);
    }
    for (size_t i = 0; st == AG_OK && i < ag_json_len(wm); i++) {
        ag_str name = ag_json_str(&wm->u.members[i].key);
        if (!ag_map_get(&s->index, name.p, name.n))
            st = ag_err_set(err, AG_EINVAL, "%s: tensor '%.*s' is not in its shard", index_path,
                            (int)(name.n > 80 ? 80 : name.n), name.p);
    }
    ag_map_deinit(&opened);
    ag_arena_deinit(&a);
    free(text);
    return st;
}

ag_status ag_st_open_dir(const char *dir, ag_st_set **out, ag_err *err) {
    char path[4096];
    ag_st_set *s = set_create();
    ag_status st;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0) {
        st = open_index(s, dir, path, err);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        st = access(path, F_OK) == 0
                 ? add_file(s, path, err)
                 : ag_err_set(err, AG_ENOTFOUND, "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    if (st != AG_OK) {
        ag_st_close(s);
        return st;
    }
    *out = s;
    return AG_OK;
}
