/* util.h -- allocation, time, randomness, string buffers, strict parsing
 * and HMAC.
 *
 * Out-of-memory policy (decided once, here): the x* allocators abort the
 * process with a message.  Nothing else in jobrunner checks for NULL from an
 * allocation.  Sizes that come from outside are bounded by the caller before
 * they reach an allocator.
 */
#ifndef JOBRUNNER_COMMON_UTIL_H
#define JOBRUNNER_COMMON_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define JR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define JR_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- allocation: never return NULL; free with free() ---- */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);               /* NULL in, NULL out */
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) JR_PRINTF(1, 2);

/* ---- time ---- */
int64_t wall_ms(void);                      /* ms since the Unix epoch */
int64_t mono_ms(void);                      /* monotonic ms, for deadlines */
void sleep_ms(int64_t ms);
/* The CLOCK_REALTIME time ms from now, the deadline pthread_cond_timedwait() takes. */
struct timespec realtime_after_ms(int64_t ms);
/* Formats ms since the epoch as ISO-8601 UTC with milliseconds
 * ("2026-11-28T19:21:35.123Z") into out, which holds at least 25 bytes. */
void iso8601_ms(int64_t ms, char *out, size_t outlen);
/* Parses an ISO-8601 UTC time "YYYY-MM-DDTHH:MM:SS[.fff...]Z" (also
 * "+00:00" for Z, and a date alone "YYYY-MM-DD") into ms since the epoch.
 * 0, or -1 for anything else (other offsets, out-of-range fields). */
int iso8601_parse_ms(const char *s, int64_t *out);

/* ---- randomness (thread-safe, seeded from the kernel) ---- */
uint64_t rand_u64(void);
/* Writes a new run id into out (37 bytes): a UUIDv7, so ids sort by
 * creation time (good for btree locality in job_runs). */
void run_id_new(char out[37]);

/* ---- growable string buffer (git's strbuf, reduced) ---- */
struct strbuf {
	char *buf;      /* always NUL-terminated once anything was added */
	size_t len;
	size_t cap;
};
#define STRBUF_INIT { NULL, 0, 0 }
void sb_add(struct strbuf *sb, const char *s, size_t n);
void sb_adds(struct strbuf *sb, const char *s);
void sb_addf(struct strbuf *sb, const char *fmt, ...) JR_PRINTF(2, 3);
void sb_reset(struct strbuf *sb);           /* len = 0, keeps memory */
void sb_release(struct strbuf *sb);         /* frees memory */
/* Returns the buffer (caller frees with free()) and empties sb. */
char *sb_detach(struct strbuf *sb);

/* v in base 10 into buf (at least 21 bytes), NUL-terminated; returns the
 * length.  What snprintf("%lld") writes, without its cost on the hot path
 * (several numbers per run go to Redis). */
size_t i64_dec(char *buf, int64_t v);

/* ---- strict parsing: 0 on success, -1 on anything else ---- */
/* Whole string must be a base-10 integer within [min, max]. */
int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* 1/0/true/false/yes/no/on/off, any case. */
int parse_bool(const char *s, int *out);

/* ---- HMAC (libcrypto: HMAC(EVP_sha256(), ...)) ---- */
#define HMAC_SHA256_HEX_LEN 64
/* Lower-case hex of HMAC-SHA256(key, msg) into out (65 bytes with the NUL). */
void hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen,
		     char out[HMAC_SHA256_HEX_LEN + 1]);

/* Constant-time comparison: 1 when equal.  The time depends only on the
 * length of b (the secret's length is not hidden, its content is). */
int ct_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
