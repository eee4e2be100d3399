/* dashauth.h -- the dashboard's sessions: a signed cookie for the API
 * token, its CSRF token, and the login rate limit.
 *
 * The dashboard asks for API_TOKEN once, on its login form; the producer
 * answers with a cookie that stands for the token until it expires, so the
 * page never keeps the token (not in a URL, not in localStorage):
 *
 *   jr_session=v1.<expires_ms>.<nonce: 32 hex>.<HMAC-SHA256: 64 hex>
 *
 * The MAC covers "v1.<expires_ms>.<nonce>" and is keyed with
 * HMAC-SHA256(API_TOKEN, "jobrunner dashboard session v1") (libcrypto), so
 * every producer replica with the same token accepts the same cookie, and
 * changing API_TOKEN ends every session.  Nothing is stored per session.
 *
 * CSRF: the cookie is SameSite=Strict; in addition a request authenticated
 * by the cookie that changes state (any method but GET and HEAD) must carry
 * X-CSRF-Token = dashauth_csrf(nonce) (HMAC of the session's nonce, handed
 * to the page by the login answer and GET /dashboard/session; the page
 * keeps it in memory only) and, when the browser sends Origin, an Origin
 * whose host is the request's Host.
 *
 * Logout clears the cookie in the browser and remembers the nonce as
 * revoked in this process (a bounded list, until the session's expiry).
 *
 * Login attempts are limited per client address: DASHAUTH_MAX_FAILURES
 * wrong tokens within DASHAUTH_WINDOW_MS, then every attempt from that
 * address (right or wrong) is refused until the window ends.
 *
 * Thread-safe: the producer's pool threads share one struct dashauth.
 */
#ifndef JOBRUNNER_COMMON_DASHAUTH_H
#define JOBRUNNER_COMMON_DASHAUTH_H

#include <stddef.h>
#include <stdint.h>

#define DASHAUTH_COOKIE "jr_session"
#define DASHAUTH_MAX_FAILURES 10
#define DASHAUTH_WINDOW_MS 60000
#define DASHAUTH_COOKIE_LEN 128        /* room for a cookie value */
#define DASHAUTH_CSRF_LEN 65           /* 64 hex + NUL */

struct dashauth;

/* api_token NULL or "": every login fails.  ttl_ms > 0. */
struct dashauth *dashauth_new(const char *api_token, int64_t ttl_ms);
void dashauth_free(struct dashauth *a);

enum { DASHAUTH_OK = 0, DASHAUTH_WRONG = -1, DASHAUTH_LIMITED = -2 };

/* Checks token (len bytes, constant-time compare) for a login from addr.
 * DASHAUTH_OK: cookie (the value, DASHAUTH_COOKIE_LEN bytes), csrf
 * (DASHAUTH_CSRF_LEN bytes) and *expires_ms are set.  DASHAUTH_WRONG: a
 * wrong token (counted).  DASHAUTH_LIMITED: too many failures from addr;
 * *retry_after_ms says when to try again. */
int dashauth_login(struct dashauth *a, const char *addr, const char *token, size_t len,
		   int64_t now_ms, char *cookie, char *csrf, int64_t *expires_ms,
		   int64_t *retry_after_ms);

/* Finds jr_session in a Cookie header and checks its MAC, expiry and
 * revocation.  0 when valid (csrf, when not NULL, gets its CSRF token;
 * *expires_ms when not NULL), -1 otherwise (absent, forged, expired,
 * revoked). */
int dashauth_check(struct dashauth *a, const char *cookie_header, int64_t now_ms,
		   char *csrf, int64_t *expires_ms);

/* Revokes the session in cookie_header (if valid) in this process. */
void dashauth_revoke(struct dashauth *a, const char *cookie_header, int64_t now_ms);

/* 1 when origin ("https://host:port") names host (a Host header value),
 * ignoring the scheme; 0 otherwise. */
int dashauth_origin_matches(const char *origin, const char *host);

#endif
