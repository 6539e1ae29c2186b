/*
 * coding.c - content codings: Accept-Encoding negotiation, gzip and zstd
 * compression (whole and flushed piece by piece), and bounded request-body
 * decoding (contracts in coding.h).
 *
 * Levels: gzip 1 and zstd 3 (nginx's and zstd's defaults), chosen for CPU per
 * byte on JSON, which compresses well at any level.  Decoding runs in 64 KiB
 * output steps and checks the limit after each, so memory follows the
 * decoded size up to the limit and never the size a bomb claims.
 */
#include "http/coding.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define STEP 65536
#define ZSTD_WINDOW_LOG_MAX 23 /* 8 MiB: what RFC 9659 lets a zstd content coding use */

const char *ag_http_coding_name(ag_http_coding c) {
    static const char *const names[] = {"identity", "gzip", "zstd", "unknown"};
    return names[c];
}

static ag_http_coding coding_of(ag_str t) {
    if (ag_str_ieq(t, ag_str_from_cstr("gzip")) || ag_str_ieq(t, ag_str_from_cstr("x-gzip"))) return AG_CODING_GZIP;
    if (ag_str_ieq(t, ag_str_from_cstr("zstd"))) return AG_CODING_ZSTD;
    if (ag_str_ieq(t, ag_str_from_cstr("identity"))) return AG_CODING_IDENTITY;
    return AG_CODING_UNKNOWN;
}

/* A q-value (RFC 9110 §12.4.2) as thousandths; -1 when malformed. */
static int qvalue(ag_str v) {
    if (!v.n || (v.p[0] != '0' && v.p[0] != '1')) return -1;
    int q = (v.p[0] - '0') * 1000, scale = 100;
    if (v.n > 1) {
        if (v.p[1] != '.' || v.n > 5) return -1;
        for (size_t i = 2; i < v.n; i++, scale /= 10) {
            if (v.p[i] < '0' || v.p[i] > '9') return -1;
            q += (v.p[i] - '0') * scale;
        }
    }
    return q > 1000 ? -1 : q;
}

ag_http_coding ag_http_accept_pick(ag_str value, unsigned allowed) {
    if (!value.p) return AG_CODING_IDENTITY;
    int q[3] = {-1, -1, -1}, star = -1; /* per coding, as listed; -1: not listed */
    const char *p = value.p, *end = value.p + value.n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        ag_str item = ag_str_trim((ag_str){p, comma ? (size_t)(comma - p) : (size_t)(end - p)});
        p = comma ? comma + 1 : end;
        const char *semi = memchr(item.p, ';', item.n);
        ag_str tok = ag_str_trim((ag_str){item.p, semi ? (size_t)(semi - item.p) : item.n});
        int w = 1000;
        if (semi) { /* ;q=... (other parameters are not defined for codings) */
            ag_str prm = ag_str_trim((ag_str){semi + 1, item.n - (size_t)(semi + 1 - item.p)});
            if (prm.n < 2 || (prm.p[0] != 'q' && prm.p[0] != 'Q') || prm.p[1] != '=') continue;
            if ((w = qvalue(ag_str_trim((ag_str){prm.p + 2, prm.n - 2}))) < 0) continue;
        }
        if (tok.n == 1 && tok.p[0] == '*') star = w;
        else {
            ag_http_coding c = coding_of(tok);
            if (c != AG_CODING_UNKNOWN) q[c] = w;
        }
    }
    ag_http_coding best = AG_CODING_IDENTITY;
    int best_q = 0;
    static const ag_http_coding order[] = {AG_CODING_ZSTD, AG_CODING_GZIP}; /* zstd first: it wins ties */
    for (size_t i = 0; i < 2; i++) {
        ag_http_coding c = order[i];
        int w = q[c] >= 0 ? q[c] : star;
        if ((allowed & (1u << c)) && w > best_q) best = c, best_q = w;
    }
    return best;
}

ag_http_coding ag_http_coding_parse(ag_str value) {
    ag_str t = ag_str_trim(value);
    if (!t.n) return AG_CODING_IDENTITY;
    return coding_of(t); /* "gzip, zstd" (two codings) is not a token: unknown */
}

/* ---- encoding ---------------------------------------------------------------------------- */

struct ag_http_encoder {
    ag_http_coding c;
    z_stream z;
    ZSTD_CCtx *zc;
};

ag_http_encoder *ag_http_encoder_new(ag_http_coding c, bool small) {
    ag_http_encoder *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->c = c;
    if (c == AG_CODING_GZIP) {
        if (deflateInit2(&e->z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return free(e), NULL;
    } else {
        if (!(e->zc = ZSTD_createCCtx())) return free(e), NULL;
        ZSTD_CCtx_setParameter(e->zc, ZSTD_c_compressionLevel, small ? 1 : 3); /* windows within RFC 9659's 8 MiB */
        if (small) ZSTD_CCtx_setParameter(e->zc, ZSTD_c_windowLog, 17);
    }
    return e;
}

void ag_http_encoder_reset(ag_http_encoder *e, size_t size) {
    if (e->c == AG_CODING_GZIP) {
        deflateReset(&e->z);
    } else {
        ZSTD_CCtx_reset(e->zc, ZSTD_reset_session_only);
        if (size) ZSTD_CCtx_setPledgedSrcSize(e->zc, size);
    }
}

void ag_http_encoder_free(ag_http_encoder *e) {
    if (!e) return;
    if (e->c == AG_CODING_GZIP) deflateEnd(&e->z);
    else ZSTD_freeCCtx(e->zc);
    free(e);
}

/* Run the encoder over in with flush mode (Z_SYNC_FLUSH/Z_FINISH or ZSTD_e_flush/ZSTD_e_end) into out. */
static ag_status run(ag_http_encoder *e, const void *in, size_t n, bool end, ag_buf *out) {
    if (e->c == AG_CODING_GZIP) {
        e->z.next_in = (Bytef *)in, e->z.avail_in = (uInt)n;
        int flush = end ? Z_FINISH : Z_SYNC_FLUSH, r;
        do {
            if (ag_buf_reserve(out, n / 2 + 64) != AG_OK) return AG_NOMEM;
            e->z.next_out = (Bytef *)out->data + out->len, e->z.avail_out = (uInt)(out->cap - out->len);
            r = deflate(&e->z, flush);
            out->len = out->cap - e->z.avail_out;
            if (r == Z_STREAM_ERROR) return AG_EINVAL;
        } while (e->z.avail_out == 0 || (end && r != Z_STREAM_END));
        return AG_OK;
    }
    ZSTD_inBuffer ib = {in, n, 0};
    size_t left;
    do {
        if (ag_buf_reserve(out, n / 2 + 64) != AG_OK) return AG_NOMEM;
        ZSTD_outBuffer ob = {out->data + out->len, out->cap - out->len, 0};
        left = ZSTD_compressStream2(e->zc, &ob, &ib, end ? ZSTD_e_end : ZSTD_e_flush);
        out->len += ob.pos;
        if (ZSTD_isError(left)) return AG_EINVAL;
    } while (left);
    return AG_OK;
}

ag_status ag_http_encoder_push(ag_http_encoder *e, const void *in, size_t n, ag_buf *out) {
    return run(e, in, n, false, out);
}

ag_status ag_http_encoder_end(ag_http_encoder *e, const void *in, size_t n, ag_buf *out) {
    return run(e, in, n, true, out);
}

ag_status ag_http_encode(ag_http_coding c, const void *in, size_t n, ag_buf *out) {
    ag_http_encoder *e = ag_http_encoder_new(c, false);
    if (!e) return AG_NOMEM;
    ag_http_encoder_reset(e, n); /* zstd sizes its tables to the input */
    ag_status st = run(e, in, n, true, out);
    ag_http_encoder_free(e);
    return st;
}

/* ---- a fixed tail coded once ------------------------------------------------------------- */

/* Raw deflate (no wrapper) of in, ending in a sync flush, or in the final block when last. */
static ag_status deflate_raw(const void *in, size_t n, bool last, ag_buf *out) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 1, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return AG_NOMEM;
    z.next_in = (Bytef *)in, z.avail_in = (uInt)n;
    int r;
    do {
        if (ag_buf_reserve(out, n / 2 + 64) != AG_OK) {
            deflateEnd(&z);
            return AG_NOMEM;
        }
        z.next_out = (Bytef *)out->data + out->len, z.avail_out = (uInt)(out->cap - out->len);
        r = deflate(&z, last ? Z_FINISH : Z_SYNC_FLUSH);
        out->len = out->cap - z.avail_out;
    } while (z.avail_out == 0 || (last && r != Z_STREAM_END));
    deflateEnd(&z);
    return AG_OK;
}

ag_status ag_http_code_tail(ag_http_coding c, const void *tail, size_t n, ag_http_coded_tail *out) {
    memset(out, 0, sizeof *out);
    ag_buf_init(&out->bytes);
    out->coding = c;
    out->len = n;
    if (c == AG_CODING_ZSTD) return ag_http_encode(c, tail, n, &out->bytes);
    out->crc = (uint32_t)crc32(0, (const Bytef *)tail, (uInt)n);
    return deflate_raw(tail, n, true, &out->bytes);
}

ag_status ag_http_code_with_tail(const ag_http_coded_tail *t, const void *head, size_t n, ag_buf *out) {
    if (t->coding == AG_CODING_ZSTD) {
        ag_status st = ag_http_encode(AG_CODING_ZSTD, head, n, out);
        ag_buf_append(out, t->bytes.data, t->bytes.len);
        return st != AG_OK ? st : out->err;
    }
    static const unsigned char gzip_header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}; /* deflate, no name, OS unknown */
    ag_buf_append(out, gzip_header, sizeof gzip_header);
    ag_status st = deflate_raw(head, n, false, out);
    ag_buf_append(out, t->bytes.data, t->bytes.len);
    uint32_t crc = (uint32_t)crc32_combine(crc32(0, (const Bytef *)head, (uInt)n), t->crc, (z_off_t)t->len);
    uint32_t size = (uint32_t)(n + t->len);
    unsigned char trailer[8] = {(unsigned char)crc, (unsigned char)(crc >> 8), (unsigned char)(crc >> 16),
                                (unsigned char)(crc >> 24), (unsigned char)size, (unsigned char)(size >> 8),
                                (unsigned char)(size >> 16), (unsigned char)(size >> 24)};
    ag_buf_append(out, trailer, sizeof trailer);
    return st != AG_OK ? st : out->err;
}

void ag_http_coded_tail_free(ag_http_coded_tail *t) { ag_buf_deinit(&t->bytes); }

/* ---- decoding ---------------------------------------------------------------------------- */

static ag_status fail(ag_http_error *err, int status, const char *reason, ag_status st) {
    err->status = status, err->reason = reason;
    return st;
}


struct ag_http_decoder {
    ag_http_coding coding;
    size_t total;  /* decoded bytes so far */
    bool ended;    /* gzip: a member ended (more input starts another); zstd: a frame ended */
    bool broken;   /* corrupt data seen: every later call fails */
    z_stream z;
    ZSTD_DCtx *zd;
};

ag_http_decoder *ag_http_decoder_new(ag_http_coding c) {
    if (c == AG_CODING_UNKNOWN) return NULL;
    ag_http_decoder *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->coding = c;
    if (c == AG_CODING_GZIP && inflateInit2(&d->z, 15 + 16) != Z_OK) {
        free(d);
        return NULL;
    }
    if (c == AG_CODING_ZSTD) {
        if (!(d->zd = ZSTD_createDCtx())) {
            free(d);
            return NULL;
        }
        ZSTD_DCtx_setParameter(d->zd, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX);
    }
    return d;
}

void ag_http_decoder_free(ag_http_decoder *d) {
    if (!d) return;
    if (d->coding == AG_CODING_GZIP) inflateEnd(&d->z);
    ZSTD_freeDCtx(d->zd);
    free(d);
}

static ag_status too_large(ag_http_decoder *d, ag_http_error *err) {
    d->broken = true;
    return fail(err, 413, "body too large once decoded", AG_EINVAL);
}

static ag_status corrupt(ag_http_decoder *d, ag_http_error *err) {
    d->broken = true;
    return fail(err, 400, d->coding == AG_CODING_GZIP ? "the gzip body does not decode" : "the zstd body does not decode",
                AG_EINVAL);
}

/* The next output step: room in out for up to STEP bytes without passing max (false: no memory); its size. */
static bool step(ag_http_decoder *d, ag_buf *out, size_t max, size_t *cap) {
    size_t left = max + 1 - d->total; /* one byte more than allowed tells "too large" from "exactly max" */
    size_t want = left < STEP ? left : STEP;
    if (ag_buf_reserve(out, want) != AG_OK) return false;
    *cap = out->cap - out->len < want ? out->cap - out->len : want;
    return true;
}

static ag_status push_gzip(ag_http_decoder *d, const void *in, size_t n, size_t max, ag_buf *out, ag_http_error *err) {
    z_stream *z = &d->z;
    z->next_in = (Bytef *)in, z->avail_in = (uInt)n;
    for (bool more = n > 0; more;) {
        if (d->ended) { /* another gzip member follows (RFC 1952 allows several) */
            if (!z->avail_in) break;
            inflateReset(z), d->ended = false;
        }
        size_t cap;
        if (!step(d, out, max, &cap)) return fail(err, 503, "out of memory decoding the body", AG_NOMEM);
        z->next_out = (Bytef *)out->data + out->len, z->avail_out = (uInt)cap;
        int r = inflate(z, Z_NO_FLUSH);
        size_t got = (size_t)((char *)z->next_out - (out->data + out->len));
        out->len += got, d->total += got;
        if (d->total > max) return too_large(d, err);
        if (r == Z_STREAM_END) d->ended = true;
        else if (r == Z_BUF_ERROR && !z->avail_in) break; /* nothing more until more input */
        else if (r != Z_OK) return corrupt(d, err);
        more = z->avail_in > 0 || got == cap; /* input left, or output held back for lack of room */
    }
    return AG_OK;
}

static ag_status push_zstd(ag_http_decoder *d, const void *in, size_t n, size_t max, ag_buf *out, ag_http_error *err) {
    ZSTD_inBuffer ib = {in, n, 0};
    for (;;) {
        size_t cap;
        if (!step(d, out, max, &cap)) return fail(err, 503, "out of memory decoding the body", AG_NOMEM);
        ZSTD_outBuffer ob = {out->data + out->len, cap, 0};
        size_t r = ZSTD_decompressStream(d->zd, &ob, &ib);
        out->len += ob.pos, d->total += ob.pos;
        if (ZSTD_isError(r)) return corrupt(d, err);
        if (d->total > max) return too_large(d, err);
        d->ended = r == 0;
        if (ib.pos == ib.size && ob.pos < cap) return AG_OK; /* all taken, and nothing held back for lack of room */
    }
}

ag_status ag_http_decoder_push(ag_http_decoder *d, const void *in, size_t n, size_t max, ag_buf *out, ag_http_error *err) {
    if (d->broken) return fail(err, 400, "the body does not decode", AG_EINVAL);
    if (d->coding == AG_CODING_IDENTITY) {
        if ((d->total += n) > max) return too_large(d, err);
        ag_buf_append(out, in, n);
        return out->err == AG_OK ? AG_OK : fail(err, 503, "out of memory decoding the body", AG_NOMEM);
    }
    if (!n) return AG_OK;
    return d->coding == AG_CODING_GZIP ? push_gzip(d, in, n, max, out, err) : push_zstd(d, in, n, max, out, err);
}

ag_status ag_http_decoder_end(ag_http_decoder *d, ag_http_error *err) {
    if (d->broken) return fail(err, 400, "the body does not decode", AG_EINVAL);
    if (d->coding != AG_CODING_IDENTITY && !d->ended) return corrupt(d, err); /* truncated */
    return AG_OK;
}

ag_status ag_http_decode(ag_http_coding c, const void *in, size_t n, size_t max, ag_buf *out, ag_http_error *err) {
    if (c == AG_CODING_UNKNOWN) return fail(err, 415, "unsupported Content-Encoding (gzip and zstd are accepted)", AG_EINVAL);
    ag_http_decoder *d = ag_http_decoder_new(c);
    if (!d) return fail(err, 503, "out of memory decoding the body", AG_NOMEM);
    ag_status st = ag_http_decoder_push(d, in, n, max, out, err);
    if (st == AG_OK) st = ag_http_decoder_end(d, err);
    ag_http_decoder_free(d);
    return st;
}
