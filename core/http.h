/*
 * http.h: the HTTP/1.x request-head parser of the admin endpoint (net/admin.c).
 *
 * picohttpparser's shape: no state is kept between calls, outputs are slices
 * into the caller's buffer, the parser never writes or allocates. Only what a
 * small GET-only server needs: the request line and the header fields; no
 * body, no chunked encoding, no obs-fold (a folded line is an error, as RFC
 * 9112 5.2 allows a server to decide).
 *
 * Pure: any thread, no clock, no I/O.
 */
#ifndef RINGMAIL_CORE_HTTP_H
#define RINGMAIL_CORE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/slice.h"

#define HTTP_MAX_HEADERS 32 /* header fields in one request; more is an error */

struct http_header {
    struct slice name;  /* token, as sent (compare without regard to case) */
    struct slice value; /* leading and trailing blanks removed; may be empty */
};

struct http_request {
    struct slice method; /* token, as sent (methods are case-sensitive) */
    struct slice target; /* request-target, as sent (query included) */
    unsigned minor;      /* HTTP/1.<minor>: 0 or 1 */
    struct http_header hdr[HTTP_MAX_HEADERS];
    unsigned nhdr;
};

enum http_parse {
    HTTP_PARSE_OK = 0,
    HTTP_PARSE_NEED_MORE = -1, /* no empty line yet: call again with more octets */
    HTTP_PARSE_BAD = -2,       /* malformed: answer 400 and close */
};

/*
 * Parse the request head at the start of buf[0..len): the request line, the
 * header fields and the empty line that ends them. Lines end with CRLF or a
 * bare LF (RFC 9112 2.2); a bare CR anywhere is an error.
 *
 * *scanned is where the search for the end of the head resumes: 0 before the
 * first call for a request; the parser updates it so octets already scanned
 * are not scanned again on the next call (picohttpparser's countermeasure to
 * slow clients). On HTTP_PARSE_OK, *consumed is the head's length and *out's
 * slices point into buf (valid while buf is). On the other results *out is
 * unspecified. Bounding len is the caller's business: past its buffer,
 * NEED_MORE means "too long".
 */
enum http_parse http_parse_request(const char *buf, size_t len, size_t *scanned,
                                   struct http_request *out, size_t *consumed);

/* The value of the first header field named name (ASCII case-insensitive); false if none. */
bool http_header_get(const struct http_request *req, const char *name, struct slice *value);

/* The path of a request-target: what precedes '?' (the query is ignored). */
struct slice http_target_path(struct slice target);

/*
 * Whether an Authorization field value is "Bearer <secret>" (the scheme
 * without regard to case, RFC 6750 2.1). The comparison takes the same time
 * whatever the given value holds: it depends on the secret's length only.
 */
bool http_bearer_match(struct slice authorization, const char *secret, size_t secret_len);

#endif
