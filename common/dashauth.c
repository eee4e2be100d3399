/* dashauth.c -- signed session cookies, CSRF tokens and the login rate
 * limit of the dashboard (see dashauth.h for the format and the rules).
 *
 * HMAC-SHA256 and the random nonce come from libcrypto (HMAC(),
 * RAND_bytes(), CRYPTO_memcmp() for constant-time compares).  The two
 * tables (failures per address, revoked nonces) are fixed arrays under one
 * mutex: a flood of addresses or logouts evicts the oldest entries and never
 * grows memory.
 */
#include "dashauth.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "util.h"

#define NONCE_HEX 32
#define MAC_LEN 32
#define ADDR_SLOTS 1024
#define REVOKED_SLOTS 1024

struct addr_slot {
	char addr[48];
	int64_t window_start;
	int failures;
};

struct revoked {
	char nonce[NONCE_HEX + 1];
	int64_t expires;
};

struct dashauth {
	unsigned char key[MAC_LEN];
	char *token;
	size_t token_len;
	int64_t ttl_ms;
	pthread_mutex_t mu;
	struct addr_slot addrs[ADDR_SLOTS];
	struct revoked revoked[REVOKED_SLOTS];
	size_t nrevoked_next;           /* ring position */
};

static void hex(const unsigned char *in, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static void mac_hex(const struct dashauth *a, const char *msg, char out[2 * MAC_LEN + 1])
{
	unsigned char m[MAC_LEN];
	unsigned int mlen = 0;
	HMAC(EVP_sha256(), a->key, MAC_LEN, (const unsigned char *)msg, strlen(msg), m, &mlen);
	hex(m, MAC_LEN, out);
}

static void csrf_of(const struct dashauth *a, const char *nonce, char *csrf)
{
	char msg[NONCE_HEX + 8];
	snprintf(msg, sizeof msg, "csrf.%s", nonce);
	mac_hex(a, msg, csrf);
}

struct dashauth *dashauth_new(const char *api_token, int64_t ttl_ms)
{
	struct dashauth *a = xcalloc(1, sizeof *a);
	pthread_mutex_init(&a->mu, NULL);
	a->ttl_ms = ttl_ms > 0 ? ttl_ms : 1;
	if (api_token && api_token[0]) {
		a->token = xstrdup(api_token);
		a->token_len = strlen(api_token);
		static const char label[] = "jobrunner dashboard session v1";
		unsigned int klen = 0;
		HMAC(EVP_sha256(), api_token, (int)a->token_len, (const unsigned char *)label,
		     sizeof label - 1, a->key, &klen);
	}
	return a;
}

void dashauth_free(struct dashauth *a)
{
	if (!a)
		return;
	if (a->token) {
		OPENSSL_cleanse(a->token, a->token_len);
		free(a->token);
	}
	OPENSSL_cleanse(a->key, sizeof a->key);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

/* The slot of addr (found, or the oldest one taken over).  Under a->mu. */
static struct addr_slot *slot_of(struct dashauth *a, const char *addr, int64_t now)
{
	struct addr_slot *victim = NULL;
	for (size_t i = 0; i < ADDR_SLOTS; i++) {
		struct addr_slot *s = &a->addrs[i];
		if (s->addr[0] && !strcmp(s->addr, addr))
			return s;
		/* an empty slot, else the one whose window began first */
		if (!victim || (victim->addr[0] && (!s->addr[0] || s->window_start < victim->window_start)))
			victim = s;
	}
	snprintf(victim->addr, sizeof victim->addr, "%s", addr);
	victim->window_start = now;
	victim->failures = 0;
	return victim;
}

int dashauth_login(struct dashauth *a, const char *addr, const char *token, size_t len,
		   int64_t now_ms, char *cookie, char *csrf, int64_t *expires_ms,
		   int64_t *retry_after_ms)
{
	*retry_after_ms = 0;
	pthread_mutex_lock(&a->mu);
	struct addr_slot *s = slot_of(a, addr ? addr : "", now_ms);
	if (now_ms - s->window_start >= DASHAUTH_WINDOW_MS) {
		s->window_start = now_ms;
		s->failures = 0;
	}
	if (s->failures >= DASHAUTH_MAX_FAILURES) {
		*retry_after_ms = s->window_start + DASHAUTH_WINDOW_MS - now_ms;
		pthread_mutex_unlock(&a->mu);
		return DASHAUTH_LIMITED;
	}
	int ok = a->token && ct_equal(token, len, a->token, a->token_len);
	if (!ok)
		s->failures++;
	pthread_mutex_unlock(&a->mu);
	if (!ok)
		return DASHAUTH_WRONG;

	unsigned char raw[NONCE_HEX / 2];
	if (RAND_bytes(raw, sizeof raw) != 1) {
		for (size_t i = 0; i < sizeof raw; i += 8) {
			uint64_t r = rand_u64();
			memcpy(raw + i, &r, sizeof raw - i < 8 ? sizeof raw - i : 8);
		}
	}
	char nonce[NONCE_HEX + 1];
	hex(raw, sizeof raw, nonce);
	*expires_ms = now_ms + a->ttl_ms;
	char msg[80];
	snprintf(msg, sizeof msg, "v1.%" PRId64 ".%s", *expires_ms, nonce);
	char mac[2 * MAC_LEN + 1];
	mac_hex(a, msg, mac);
	snprintf(cookie, DASHAUTH_COOKIE_LEN, "%s.%s", msg, mac);
	csrf_of(a, nonce, csrf);
	return DASHAUTH_OK;
}

/* Copies the value of jr_session from a Cookie header into out; -1 when
 * absent or too long. */
static int cookie_value(const char *header, char *out, size_t outlen)
{
	const size_t nlen = sizeof DASHAUTH_COOKIE - 1;
	for (const char *p = header; p && *p;) {
		while (*p == ' ' || *p == ';')
			p++;
		const char *end = strchr(p, ';');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n > nlen && !strncmp(p, DASHAUTH_COOKIE, nlen) && p[nlen] == '=') {
			size_t vlen = n - nlen - 1;
			while (vlen && p[nlen + 1 + vlen - 1] == ' ')
				vlen--;
			if (vlen >= outlen)
				return -1;
			memcpy(out, p + nlen + 1, vlen);
			out[vlen] = '\0';
			return 0;
		}
		p = end;
	}
	return -1;
}

/* Parses and verifies a cookie value; 0 with nonce and expiry. */
static int verify(struct dashauth *a, const char *cookie_header, int64_t now_ms,
		  char nonce[NONCE_HEX + 1], int64_t *exp)
{
	if (!a->token || !cookie_header)
		return -1;
	char v[DASHAUTH_COOKIE_LEN];
	if (cookie_value(cookie_header, v, sizeof v))
		return -1;
	/* v1.<digits>.<32 hex>.<64 hex> */
	if (strncmp(v, "v1.", 3))
		return -1;
	char *dot1 = strchr(v + 3, '.');
	if (!dot1)
		return -1;
	char *dot2 = strchr(dot1 + 1, '.');
	if (!dot2 || dot2 - dot1 - 1 != NONCE_HEX || strlen(dot2 + 1) != 2 * MAC_LEN)
		return -1;
	*dot2 = '\0';
	char mac[2 * MAC_LEN + 1];
	mac_hex(a, v, mac);
	if (CRYPTO_memcmp(mac, dot2 + 1, 2 * MAC_LEN) != 0)
		return -1;
	*dot1 = '\0';
	if (parse_i64(v + 3, 0, INT64_MAX, exp) || *exp <= now_ms)
		return -1;
	memcpy(nonce, dot1 + 1, NONCE_HEX);
	nonce[NONCE_HEX] = '\0';
	int revoked = 0;
	pthread_mutex_lock(&a->mu);
	for (size_t i = 0; i < REVOKED_SLOTS && !revoked; i++)
		revoked = a->revoked[i].expires > now_ms && !strcmp(a->revoked[i].nonce, nonce);
	pthread_mutex_unlock(&a->mu);
	return revoked ? -1 : 0;
}

int dashauth_check(struct dashauth *a, const char *cookie_header, int64_t now_ms,
		   char *csrf, int64_t *expires_ms)
{
	char nonce[NONCE_HEX + 1];
	int64_t exp;
	if (verify(a, cookie_header, now_ms, nonce, &exp))
		return -1;
	if (csrf)
		csrf_of(a, nonce, csrf);
	if (expires_ms)
		*expires_ms = exp;
	return 0;
}

void dashauth_revoke(struct dashauth *a, const char *cookie_header, int64_t now_ms)
{
	char nonce[NONCE_HEX + 1];
	int64_t exp;
	if (verify(a, cookie_header, now_ms, nonce, &exp))
		return;
	pthread_mutex_lock(&a->mu);
	struct revoked *r = &a->revoked[a->nrevoked_next];
	a->nrevoked_next = (a->nrevoked_next + 1) % REVOKED_SLOTS;
	memcpy(r->nonce, nonce, sizeof r->nonce);
	r->expires = exp;
	pthread_mutex_unlock(&a->mu);
}

int dashauth_origin_matches(const char *origin, const char *host)
{
	if (!origin || !host || !host[0])
		return 0;
	const char *p = strstr(origin, "://");
	if (!p)
		return 0;
	p += 3;
	size_t n = strlen(p);
	while (n && p[n - 1] == '/')
		n--;
	return n == strlen(host) && strncasecmp(p, host, n) == 0;
}
