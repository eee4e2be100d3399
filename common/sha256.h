/* sha256.h -- SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104).
 *
 * Used for Meta's appsecret_proof (hex HMAC-SHA256 of the access token
 * keyed with the app secret).  A small own implementation instead of
 * OpenSSL's: libcurl pulls libssl in at run time, but linking libcrypto
 * directly would make it a build dependency of its own for one function.
 * Not hardened against side channels beyond being branch-free on data.
 */
#ifndef JOBRUNNER_COMMON_SHA256_H
#define JOBRUNNER_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_HEX_LEN 64
#define SHA256_BLOCK 64

struct sha256 {
	uint32_t h[8];
	uint64_t total;            /* bytes hashed so far */
	uint8_t buf[SHA256_BLOCK];
	size_t nbuf;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
void sha256_final(struct sha256 *s, uint8_t out[SHA256_LEN]);   /* wipes s */

/* One-shot digest. */
void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]);
/* HMAC-SHA256(key, msg). */
void sha256_hmac(const void *key, size_t keylen, const void *msg, size_t msglen,
		 uint8_t out[SHA256_LEN]);
/* Lower-case hex of a digest into out (65 bytes: 64 digits + NUL). */
void sha256_hex(const uint8_t digest[SHA256_LEN], char out[SHA256_HEX_LEN + 1]);

#endif
