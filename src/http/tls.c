/*
 * tls.c - TLS on a connection, with OpenSSL 3 over memory BIOs.
 *
 * The socket stays libuv's: what it reads is handed to OpenSSL's read BIO,
 * and what OpenSSL has to send (handshake, records, alerts) is taken from
 * its write BIO and written by the owner (the server's conn.c, the load
 * generator's lg_conn.c) like any other bytes, so nothing ever
 * blocks and the loop never waits on the handshake.  A memory BIO never
 * refuses a write, so a record is always whole when SSL_write returns.
 *
 * Policy: TLS 1.2 and 1.3 with the library's defaults (Debian's security
 * level 2), no renegotiation (RFC 9113 §9.2.1), no compression.  ALPN offers
 * h2 then http/1.1; the protocol that follows is told by its first bytes as
 * on cleartext (an h2 client sends the preface), so ALPN only has to agree.
 * A client offers one protocol, the one it will speak, and checks the
 * server's certificate against the system's or a given CA file, host name
 * or IP address included, unless told not to.
 */
#define _POSIX_C_SOURCE 200809L
#include "http/tls.h"

#include "base/alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

struct ag_tls_ctx {
    SSL_CTX *ctx;
    bool client;
};

struct ag_tls {
    SSL *ssl;
    bool ready;     /* the handshake is done */
    char why[160];  /* the failure, once there is one */
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

static ag_tls_ctx *ctx_wrap(SSL_CTX *ctx, bool client) {
    ag_tls_ctx *x = ag_xcalloc(1, sizeof *x);
    x->ctx = ctx;
    x->client = client;
    return x;
}

/* A context with the policy above, either side's. */
static SSL_CTX *ctx_new(const SSL_METHOD *method, char *msg, size_t cap) {
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx) {
        char why[160];
        last_error(why, sizeof why);
        snprintf(msg, cap, "TLS: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    return ctx;
}

ag_tls_ctx *ag_tls_ctx_new_server(const char *cert, const char *key, char *msg, size_t cap) {
    char why[160];
    SSL_CTX *ctx = ctx_new(TLS_server_method(), msg, cap);
    if (!ctx) return NULL;
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
        return ctx_wrap(ctx, false);
    }
    if (kf) fclose(kf);
    EVP_PKEY_free(pkey);
    SSL_CTX_free(ctx);
    return NULL;
}

ag_tls_ctx *ag_tls_ctx_new_client(const char *alpn, bool verify, const char *ca_file, char *msg, size_t cap) {
    char why[160];
    unsigned char wire[256];
    size_t n = strlen(alpn);
    if (n >= sizeof wire) return snprintf(msg, cap, "TLS: ALPN protocol name too long"), NULL;
    SSL_CTX *ctx = ctx_new(TLS_client_method(), msg, cap);
    if (!ctx) return NULL;
    wire[0] = (unsigned char)n;
    memcpy(wire + 1, alpn, n);
    SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)n + 1);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (ca_file && !readable(ca_file, "--cacert", msg, cap)) {
            SSL_CTX_free(ctx);
            return NULL;
        }
        if ((ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
            last_error(why, sizeof why);
            snprintf(msg, cap, "%s%s: no certificates to trust (%s)", ca_file ? "--cacert " : "the system's CA store",
                     ca_file ? ca_file : "", why);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx_wrap(ctx, true);
}

void ag_tls_ctx_free(ag_tls_ctx *x) {
    if (!x) return;
    SSL_CTX_free(x->ctx);
    free(x);
}

/* A client's SNI and the identity its certificate must show: an IP address as one, else a DNS name. */
static bool client_names(SSL *ssl, const char *host) {
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1;
    return SSL_set_tlsext_host_name(ssl, host) == 1 && SSL_set1_host(ssl, host) == 1;
}

ag_tls *ag_tls_new(ag_tls_ctx *x, const char *host) {
    SSL *ssl = SSL_new(x->ctx);
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    if (!ssl || !r || !w || (x->client && !client_names(ssl, host))) {
        SSL_free(ssl), BIO_free(r), BIO_free(w);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(ssl, r, w);
    if (x->client) SSL_set_connect_state(ssl);
    else SSL_set_accept_state(ssl);
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

/* Note why the session failed: a certificate that did not verify, else OpenSSL's reason. */
static void failed(ag_tls *t) {
    if (t->why[0]) return;
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK) snprintf(t->why, sizeof t->why, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    else last_error(t->why, sizeof t->why);
}

/* One step of the handshake; false when it failed. */
static bool handshake(ag_tls *t) {
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) t->ready = true;
    else if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) return failed(t), false;
    return true;
}

void ag_tls_start(ag_tls *t, ag_buf *wire) {
    handshake(t);
    drain(t, wire);
    ERR_clear_error();
}

ag_tls_result ag_tls_recv(ag_tls *t, const char *p, size_t n, ag_buf *plain, ag_buf *wire) {
    if (BIO_write(SSL_get_rbio(t->ssl), p, (int)n) != (int)n) return AG_TLS_FAILED;
    ag_tls_result res = AG_TLS_OK;
    if (!t->ready && !handshake(t)) res = AG_TLS_FAILED;
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
        else if (e != SSL_ERROR_WANT_READ) res = AG_TLS_FAILED, failed(t);
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

bool ag_tls_alpn_is(const ag_tls *t, const char *proto) {
    const unsigned char *p;
    unsigned n;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    return n == strlen(proto) && memcmp(p, proto, n) == 0;
}

const char *ag_tls_why(const ag_tls *t) { return t->why[0] ? t->why : "TLS failed"; }
