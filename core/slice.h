/*
 * slice.h: a (pointer, length) view into someone else's buffer.
 * A slice never owns memory and never outlives the buffer it points into;
 * every function that returns one says how long it stays valid.
 */
#ifndef RINGMAIL_CORE_SLICE_H
#define RINGMAIL_CORE_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct slice {
    const char *p;
    size_t len;
};

#define SLICE_LIT(s) ((struct slice){ (s), sizeof(s) - 1 })

static inline struct slice
slice_make(const char *p, size_t len)
{
    return (struct slice){ p, len };
}

/* ASCII-only case folding, no locale (ctype.h is banned). */
static inline char
ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

/* The value of a hexadecimal digit (either case), or -1. */
static inline int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static inline bool
slice_eq(struct slice a, const char *lit)
{
    return a.len == strlen(lit) && memcmp(a.p, lit, a.len) == 0;
}

static inline bool
slice_eq_nocase(struct slice a, const char *lit)
{
    size_t n = strlen(lit);

    if (a.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower(a.p[i]) != ascii_lower(lit[i]))
            return false;
    }
    return true;
}

static inline bool
slice_prefix_nocase(struct slice a, const char *lit)
{
    size_t n = strlen(lit);

    if (a.len < n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower(a.p[i]) != ascii_lower(lit[i]))
            return false;
    }
    return true;
}

#endif
