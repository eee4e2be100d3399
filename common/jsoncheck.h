/* jsoncheck.h -- strict checks of text that comes from outside: JSON
 * documents (request bodies, run payloads, stream entries) and the short
 * identifiers that travel with a run (org ids, job names, idempotency keys).
 *
 * cJSON parses what it is given and is kept for building and walking trees;
 * it does not enforce what the rest of the system needs, so every JSON text
 * that will be stored or embedded is checked here first:
 *   - exactly one JSON value, fully consumed (only whitespace after it);
 *   - nesting at most max_depth (JSON_MAX_DEPTH for payloads: the API and
 *     the stream entry parser use the same limit);
 *   - valid UTF-8 (no overlong forms, no surrogates, nothing above
 *     U+10FFFF), no raw control character inside a string, no \u0000 and
 *     no unpaired surrogate escape (PostgreSQL's jsonb refuses them, and a
 *     NUL would cut a C string short);
 *   - numbers that survive a round trip unchanged: at most
 *     JSON_MAX_NUMBER_DIGITS significant digits, neither overflowing nor
 *     underflowing a double (9007199254740993 and 1e999999 are refused,
 *     not rounded or turned into null).
 * The check is one pass without allocation or recursion (the nesting is
 * tracked in a fixed stack), so it is safe on hostile input of any shape.
 *
 * Identifier text (text_valid): 1..max bytes of valid UTF-8 without control
 * characters (U+0000-U+001F, U+007F-U+009F).
 */
#ifndef JOBRUNNER_COMMON_JSONCHECK_H
#define JOBRUNNER_COMMON_JSONCHECK_H

#include <stddef.h>

#define JSON_MAX_DEPTH 64            /* payloads: objects and arrays nested */
#define JSON_MAX_NUMBER_DIGITS 15    /* what a double keeps exactly */

enum json_check_flags {
	JSON_CHECK_OBJECT = 1,       /* the value must be an object */
};

/* 0 when s[0..len) is one JSON value meeting the rules above, nested at
 * most max_depth (<= 256); else -1 with a message naming the byte offset
 * in err (may be NULL).  s need not be NUL-terminated. */
int json_check(const char *s, size_t len, int max_depth, unsigned flags, char *err,
	       size_t errlen);

/* 1 when s[0..n) is identifier text of 1..max bytes (see above). */
int text_valid(const char *s, size_t n, size_t max);

/* Copies at most max bytes of s into out (max + 1 bytes), cut on a UTF-8
 * character boundary, with invalid bytes and control characters replaced
 * by '?': free text from outside (an error message) made safe to store
 * and to log.  Returns the length written. */
size_t text_clean(char *out, const char *s, size_t max);

/* Length of the valid UTF-8 sequence at s (1..4, at most n bytes), or 0. */
size_t utf8_seq_len(const unsigned char *s, size_t n);

#endif
