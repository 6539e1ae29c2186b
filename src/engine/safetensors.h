/*
 * safetensors.h - Hugging Face .safetensors files, read in place.
 *
 * Layout: u64 header_len (little-endian) | header_len bytes of JSON
 *   {"NAME": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {...}} | data, offsets relative to its start.
 * The header is parsed with src/json (strict, depth-limited) and every
 * tensor's dtype, shape and byte range is checked against the file before
 * use.  Tensors of dtypes the engine does not compute with (I64 buffers and
 * the like) are listed with dtype -1, so a converter can skip or refuse them
 * by name.  A sharded checkpoint is several files; ag_st_open_dir reads
 * model.safetensors, or model.safetensors.index.json and its shards.
 */
#ifndef AG_ENGINE_SAFETENSORS_H
#define AG_ENGINE_SAFETENSORS_H

#include "autoglm/status.h"
#include "base/str.h"

#include <stddef.h>
#include <stdint.h>

#define AG_ST_MAX_DIMS 8
#define AG_ST_MAX_HEADER (100u << 20) /* the format's own cap on the JSON header */

typedef struct ag_st_tensor {
    const char *name;  /* NUL-terminated, owned by the file set */
    int dtype;         /* AG_DTYPE_F32/F16/BF16, or -1 when the engine does not use that dtype */
    const char *dtype_name; /* as written in the header ("F16", "I64", ...) */
    uint32_t n_dims;
    uint64_t shape[AG_ST_MAX_DIMS]; /* PyTorch order: shape[0] is the outermost */
    uint64_t n_elems;
    const void *data;
    uint64_t n_bytes;
} ag_st_tensor;

typedef struct ag_st_set ag_st_set;

/* One file, or a directory's model.safetensors / sharded index.  *out: ag_st_close. */
ag_status ag_st_open(const char *path, ag_st_set **out, ag_err *err);
ag_status ag_st_open_dir(const char *dir, ag_st_set **out, ag_err *err);
/* Parse a file image already in memory (tests, fuzzing); data must outlive the set. */
ag_status ag_st_parse(const void *data, size_t size, ag_st_set **out, ag_err *err);
void ag_st_close(ag_st_set *s);

size_t ag_st_count(const ag_st_set *s);
const ag_st_tensor *ag_st_at(const ag_st_set *s, size_t i);
const ag_st_tensor *ag_st_find(const ag_st_set *s, const char *name);

#endif
