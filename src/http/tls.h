/*
 * tls.h - TLS on a connection, for the server's and the load generator's
 * (OpenSSL over memory BIOs; see tls.c).  The owner of the socket feeds it
 * the bytes it reads and writes the bytes it gives back; the plaintext goes
 * where a cleartext connection's bytes go.
 */
#ifndef AG_HTTP_TLS_H
#define AG_HTTP_TLS_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct ag_tls_ctx ag_tls_ctx; /* the certificate, the key and the policy */
typedef struct ag_tls ag_tls;         /* one connection's session */

/* A server's: NULL with msg naming the file and the reason when the certificate or the key cannot be used. */
ag_tls_ctx *ag_tls_ctx_new_server(const char *cert_file, const char *key_file, char *msg, size_t cap);
/* A client's, offering the one ALPN protocol alpn ("h2", "http/1.1").  verify: the server's certificate must chain
 * to ca_file's certificates (NULL: the system's) and name the host; false takes any certificate (--insecure).
 * NULL with msg when ca_file cannot be used. */
ag_tls_ctx *ag_tls_ctx_new_client(const char *alpn, bool verify, const char *ca_file, char *msg, size_t cap);
void ag_tls_ctx_free(ag_tls_ctx *x);

/* A session: a server's accepts; a client's connects to host (its SNI, and the name or address checked). */
ag_tls *ag_tls_new(ag_tls_ctx *x, const char *host); /* NULL: no memory */
void ag_tls_free(ag_tls *t);

typedef enum ag_tls_result {
    AG_TLS_OK,     /* go on */
    AG_TLS_CLOSED, /* the peer said close_notify */
    AG_TLS_FAILED  /* a handshake or record error: close (wire may hold the alert) */
} ag_tls_result;

/* Bytes read from the socket in; the plaintext they carry appended to plain (NUL-terminated), what TLS has to
 * send (handshake, alerts) to wire. */
ag_tls_result ag_tls_recv(ag_tls *t, const char *p, size_t n, ag_buf *plain, ag_buf *wire);
/* Plaintext out as records appended to wire; false before the handshake is done or on an error. */
bool ag_tls_send(ag_tls *t, const void *p, size_t n, ag_buf *wire);
/* A client's first flight (ClientHello), appended to wire. */
void ag_tls_start(ag_tls *t, ag_buf *wire);
/* close_notify, appended to wire. */
void ag_tls_shutdown(ag_tls *t, ag_buf *wire);
bool ag_tls_ready(const ag_tls *t);
/* After the handshake: whether the peers agreed on ALPN protocol proto. */
bool ag_tls_alpn_is(const ag_tls *t, const char *proto);
/* Why the session failed (a handshake alert, a certificate that does not verify), after AG_TLS_FAILED. */
const char *ag_tls_why(const ag_tls *t);

#endif
