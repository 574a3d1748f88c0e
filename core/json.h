/*
 * json.h: a small JSON reader for `ringmail queue` (net/queue_cmd.c), which
 * prints the admin endpoint's /queue answers as text.
 *
 * jsmn's shape: json_parse() fills a caller's array of tokens in document
 * order (an object's token is followed by its key and value tokens, an
 * array's by its elements); tokens are offsets into the text, nothing is
 * allocated or copied. Strict RFC 8259 syntax, nesting at most JSON_DEPTH.
 *
 * Pure: any thread, no I/O.
 */
#ifndef RINGMAIL_CORE_JSON_H
#define RINGMAIL_CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_DEPTH 32

enum json_type {
    JSON_OBJECT = 1,
    JSON_ARRAY,
    JSON_STRING, /* start/end: inside the quotes, still escaped */
    JSON_NUMBER,
    JSON_TRUE,
    JSON_FALSE,
    JSON_NULL,
};

struct json_tok {
    enum json_type type;
    size_t start, end; /* text[start..end) */
    size_t size;       /* members of an object, elements of an array; else 0 */
};

/* Parse text[0..len) (one value, blanks around it); the token count, or -1 when malformed or
   when more than ntok tokens are needed. */
long json_parse(const char *text, size_t len, struct json_tok *tok, size_t ntok);

/* The index of the token after token i's whole value. */
size_t json_skip(const struct json_tok *tok, size_t i);

/* Object token obj's value for key (compared after unescaping); its index, or -1. */
long json_get(const char *text, const struct json_tok *tok, size_t obj, const char *key);

/* A string token's text unescaped into out (NUL-terminated, cut to cap - 1); its length. */
size_t json_str(const char *text, const struct json_tok *t, char *out, size_t cap);

/* A number token as an unsigned integer (its integer part); false for another token. */
bool json_u64(const char *text, const struct json_tok *t, uint64_t *v);

#endif
