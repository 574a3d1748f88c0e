/*
 * json.c: the small JSON reader of `ringmail queue`. See json.h.
 */
#include "core/json.h"

#include <string.h>

struct jp {
    const char *s;
    size_t len, pos;
    struct json_tok *tok;
    size_t ntok, n;
};

static void
blanks(struct jp *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static long
tok_new(struct jp *p, enum json_type type, size_t start)
{
    if (p->n == p->ntok)
        return -1;
    p->tok[p->n] = (struct json_tok){ type, start, start, 0 };
    return (long)p->n++;
}

static bool
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int
string(struct jp *p)
{
    long t;

    p->pos++; /* the opening quote */
    t = tok_new(p, JSON_STRING, p->pos);
    if (t < 0)
        return -1;
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->s[p->pos];

        if (c == '"') {
            p->tok[t].end = p->pos++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            char e;

            if (++p->pos >= p->len)
                return -1;
            e = p->s[p->pos];
            if (e == 'u') {
                for (int k = 1; k <= 4; k++) {
                    if (p->pos + (size_t)k >= p->len || !is_hex(p->s[p->pos + (size_t)k]))
                        return -1;
                }
                p->pos += 4;
            } else if (strchr("\"\\/bfnrt", e) == NULL || e == '\0') {
                return -1;
            }
        }
        p->pos++;
    }
    return -1;
}

static bool
digits(struct jp *p)
{
    size_t at = p->pos;

    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
        p->pos++;
    return p->pos > at;
}

static int
number(struct jp *p)
{
    long t = tok_new(p, JSON_NUMBER, p->pos);

    if (t < 0)
        return -1;
    if (p->s[p->pos] == '-')
        p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '0')
        p->pos++;
    else if (!digits(p))
        return -1;
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (!digits(p))
            return -1;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (!digits(p))
            return -1;
    }
    p->tok[t].end = p->pos;
    return 0;
}

static int
literal(struct jp *p, const char *lit, enum json_type type)
{
    size_t n = strlen(lit);
    long t;

    if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0)
        return -1;
    t = tok_new(p, type, p->pos);
    if (t < 0)
        return -1;
    p->pos += n;
    p->tok[t].end = p->pos;
    return 0;
}

static int value(struct jp *p, unsigned depth);

static int
container(struct jp *p, unsigned depth, bool obj)
{
    char close = obj ? '}' : ']';
    long t = tok_new(p, obj ? JSON_OBJECT : JSON_ARRAY, p->pos);

    if (t < 0 || depth >= JSON_DEPTH)
        return -1;
    p->pos++;
    blanks(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->tok[t].end = ++p->pos;
        return 0;
    }
    for (;;) {
        blanks(p);
        if (obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"' || string(p) < 0)
                return -1;
            blanks(p);
            if (p->pos >= p->len || p->s[p->pos] != ':')
                return -1;
            p->pos++;
        }
        if (value(p, depth + 1) < 0)
            return -1;
        p->tok[t].size++;
        blanks(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->tok[t].end = ++p->pos;
            return 0;
        }
        return -1;
    }
}

static int
value(struct jp *p, unsigned depth)
{
    blanks(p);
    if (p->pos >= p->len)
        return -1;
    switch (p->s[p->pos]) {
    case '{':
        return container(p, depth, true);
    case '[':
        return container(p, depth, false);
    case '"':
        return string(p);
    case 't':
        return literal(p, "true", JSON_TRUE);
    case 'f':
        return literal(p, "false", JSON_FALSE);
    case 'n':
        return literal(p, "null", JSON_NULL);
    default:
        if (p->s[p->pos] == '-' || (p->s[p->pos] >= '0' && p->s[p->pos] <= '9'))
            return number(p);
        return -1;
    }
}

long
json_parse(const char *text, size_t len, struct json_tok *tok, size_t ntok)
{
    struct jp p = { text, len, 0, tok, ntok, 0 };

    if (value(&p, 0) < 0)
        return -1;
    blanks(&p);
    return p.pos == len ? (long)p.n : -1;
}

size_t
json_skip(const struct json_tok *tok, size_t i)
{
    size_t n = tok[i].size, j = i + 1;

    for (size_t k = 0; k < n; k++) {
        if (tok[i].type == JSON_OBJECT)
            j++; /* the key: a string, one token */
        j = json_skip(tok, j);
    }
    return j;
}

static unsigned
hex4(const char *s)
{
    unsigned v = 0;

    for (int k = 0; k < 4; k++) {
        char c = s[k];

        v = v << 4 | (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static size_t
put_utf8(char *out, size_t o, size_t cap, unsigned cp)
{
    char b[4];
    size_t n;

    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | cp >> 6);
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | cp >> 12);
        b[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | cp >> 18);
        b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (o + n >= cap)
        return o;
    memcpy(out + o, b, n);
    return o + n;
}

size_t
json_str(const char *text, const struct json_tok *t, char *out, size_t cap)
{
    size_t o = 0;

    if (cap == 0)
        return 0;
    for (size_t i = t->start; i < t->end && o + 1 < cap; i++) {
        char c = text[i];

        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        c = text[++i];
        switch (c) {
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u': {
            unsigned cp = hex4(text + i + 1);

            i += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < t->end + 0 && text[i + 1] == '\\' &&
                text[i + 2] == 'u') {
                unsigned lo = hex4(text + i + 3);

                if (lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    i += 6;
                }
            }
            if (cp >= 0xd800 && cp < 0xe000)
                cp = 0xfffd; /* a lone surrogate */
            o = put_utf8(out, o, cap, cp);
            break;
        }
        default: /* " \ / */
            out[o++] = c;
            break;
        }
    }
    out[o] = '\0';
    return o;
}

bool
json_u64(const char *text, const struct json_tok *t, uint64_t *v)
{
    uint64_t x = 0;

    if (t->type != JSON_NUMBER || text[t->start] == '-')
        return false;
    for (size_t i = t->start; i < t->end && text[i] >= '0' && text[i] <= '9'; i++)
        x = x * 10 + (uint64_t)(text[i] - '0');
    *v = x;
    return true;
}

long
json_get(const char *text, const struct json_tok *tok, size_t obj, const char *key)
{
    size_t j = obj + 1, klen = strlen(key);

    if (tok[obj].type != JSON_OBJECT)
        return -1;
    for (size_t k = 0; k < tok[obj].size; k++) {
        char buf[128];

        if (klen < sizeof(buf) && json_str(text, &tok[j], buf, sizeof(buf)) == klen &&
            memcmp(buf, key, klen) == 0)
            return (long)(j + 1);
        j = json_skip(tok, j + 1);
    }
    return -1;
}
