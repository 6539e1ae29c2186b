/*
 * tls.c - TLS on a connection, with OpenSSL 3 over memory BIOs.
 *
 * The socket stays libuv's: what it reads is handed to OpenSSL's read BIO,
 * and what OpenSSL has to send (handshake, records, alerts) is taken from
 * its write BIO and written by conn.c like any other bytes, so nothing ever
 * blocks and the loop never waits on the handshake.  A memory BIO never
 * refuses a write, so a record is always whole when SSL_write returns.
 *
 * Policy: TLS 1.2 and 1.3 with the library's defaults (Debian's security
 * level 2), no renegotiation (RFC 9113 §9.2.1), no compression.  ALPN offers
 * h2 then http/1.1; the protocol that follows is told by its first bytes as
 * on cleartext (an h2 client sends the preface), so ALPN only has to agree.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/tls.h"

#include "base/alloc.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

struct ag_tls_ctx {
    SSL_CTX *ctx;
};

struct ag_tls {
    SSL *ssl;
    bool ready; /* the handshake is done */
};

static const unsigned char alpn_ours[] = "\x02h2\x08http/1.1";

/* The first of ours the client offers; none in common is a fatal alert (RFC 7301 §3.2). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
    (void)ssl, (void)arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, alpn_ours, sizeof alpn_ours - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static void last_error(char *buf, size_t cap) {
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, cap, "%s", r ? r : "unknown error");
    ERR_clear_error();
}

static bool readable(const char *path, const char *flag, char *msg, size_t cap) {
    FILE *f = fopen(path, "r");
    if (f) return fclose(f), true;
    snprintf(msg, cap, "%s %s: %s", flag, path, strerror(errno));
    return false;
}

ag_tls_ctx *ag_tls_ctx_new(const char *cert, const char *key, char *msg, size_t cap) {
    char why[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        last_error(why, sizeof why);
        snprintf(msg, cap, "TLS: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    EVP_PKEY *pkey = NULL;
    FILE *kf = NULL;
    if (!readable(cert, "--tls-cert", msg, cap) || !readable(key, "--tls-key", msg, cap)) {
        /* msg says which */
    } else if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        last_error(why, sizeof why);
        snprintf(msg, cap, "--tls-cert %s: not a PEM certificate (%s)", cert, why);
    } else if (!(kf = fopen(key, "r")) || !(pkey = PEM_read_PrivateKey(kf, NULL, NULL, NULL))) {
        last_error(why, sizeof why);
        snprintf(msg, cap, "--tls-key %s: not a PEM private key without a passphrase (%s)", key, why);
    } else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        last_error(why, sizeof why);
        snprintf(msg, cap, "--tls-key %s does not match the certificate in %s (%s)", key, cert, why);
    } else {
        fclose(kf);
        EVP_PKEY_free(pkey);
        ag_tls_ctx *x = ag_xmalloc(sizeof *x);
        x->ctx = ctx;
        return x;
    }
    if (kf) fclose(kf);
    EVP_PKEY_free(pkey);
    SSL_CTX_free(ctx);
    return NULL;
}

void ag_tls_ctx_free(ag_tls_ctx *x) {
    if (!x) return;
    SSL_CTX_free(x->ctx);
    free(x);
}

ag_tls *ag_tls_new(ag_tls_ctx *x) {
    SSL *ssl = SSL_new(x->ctx);
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    if (!ssl || !r || !w) {
        SSL_free(ssl), BIO_free(r), BIO_free(w);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(ssl, r, w);
    SSL_set_accept_state(ssl);
    ag_tls *t = ag_xcalloc(1, sizeof *t);
    t->ssl = ssl;
    return t;
}

void ag_tls_free(ag_tls *t) {
    if (!t) return;
    SSL_free(t->ssl);
    free(t);
}

/* What OpenSSL has to send, appended to wire. */
static void drain(ag_tls *t, ag_buf *wire) {
    BIO *w = SSL_get_wbio(t->ssl);
    size_t n;
    while ((n = (size_t)BIO_ctrl_pending(w)) > 0) {
        if (ag_buf_reserve(wire, n) != AG_OK) return;
        int r = BIO_read(w, wire->data + wire->len, (int)n);
        if (r <= 0) return;
        wire->len += (size_t)r;
    }
}

ag_tls_result ag_tls_recv(ag_tls *t, const char *p, size_t n, ag_buf *plain, ag_buf *wire) {
    if (BIO_write(SSL_get_rbio(t->ssl), p, (int)n) != (int)n) return AG_TLS_FAILED;
    ag_tls_result res = AG_TLS_OK;
    if (!t->ready) {
        int r = SSL_do_handshake(t->ssl);
        if (r == 1) t->ready = true;
        else if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) res = AG_TLS_FAILED;
    }
    while (t->ready && res == AG_TLS_OK) {
        if (ag_buf_reserve(plain, 16384 + 1) != AG_OK) {
            res = AG_TLS_FAILED; /* more than the connection may hold */
            break;
        }
        size_t got = 0;
        int r = SSL_read_ex(t->ssl, plain->data + plain->len, plain->cap - plain->len - 1, &got);
        if (r == 1) {
            plain->len += got;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) res = AG_TLS_CLOSED;
        else if (e != SSL_ERROR_WANT_READ) res = AG_TLS_FAILED;
        break;
    }
    if (plain->data) plain->data[plain->len] = '\0';
    drain(t, wire);
    ERR_clear_error();
    return res;
}

bool ag_tls_send(ag_tls *t, const void *p, size_t n, ag_buf *wire) {
    size_t done = 0;
    bool ok = !n || (t->ready && SSL_write_ex(t->ssl, p, n, &done) == 1 && done == n);
    drain(t, wire);
    ERR_clear_error();
    return ok;
}

void ag_tls_shutdown(ag_tls *t, ag_buf *wire) {
    if (t->ready) SSL_shutdown(t->ssl);
    drain(t, wire);
    ERR_clear_error();
}

bool ag_tls_ready(const ag_tls *t) { return t->ready; }
