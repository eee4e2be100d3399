/* url.h -- the one URL module: splitting, parsing and redacting the URLs
 * jobrunner is given (REDIS_URL, DATABASE_URL in messages, META_GRAPH_URL).
 *
 * Schemes parsed in full (url_parse): redis://, rediss:// (TLS),
 * redis-sentinel://, rediss-sentinel:// (TLS to the sentinels and the
 * master), http://, https://.
 *
 *   redis[s]://[[user:]password@]host[:port][/db]
 *   redis[s]-sentinel://[[user:]password@]host1[:port1][,host2[:port2]...][/db]#master
 *   http[s]://[user:password@]host[:port][/path][?query][#fragment]
 *
 * Where the user information ends: at the LAST '@' of the authority, and
 * the authority ends at the first '/', '?' or '#' after that '@' -- so a
 * password may hold '@' and ':' unencoded (user names may not hold ':').
 * User and password are percent-decoded.  In redis URLs a password alone
 * (redis://pw@h) is a password, as redis-cli reads it; in other schemes
 * (postgresql://user@h) it is a user, as RFC 3986 reads it.
 *
 * Secrets: url_redact() is the one function that turns a URL into text
 * for a message; no error message of this module quotes any part of the
 * URL but its scheme.
 */
#ifndef JOBRUNNER_COMMON_URL_H
#define JOBRUNNER_COMMON_URL_H

#include <stddef.h>

#define URL_MAX_HOSTS 16
#define URL_MAX_HOST_LEN 255

enum url_scheme {
	URL_NONE = 0,
	URL_REDIS,
	URL_REDISS,
	URL_REDIS_SENTINEL,
	URL_REDISS_SENTINEL,
	URL_HTTP,
	URL_HTTPS,
	URL_OTHER,           /* some other scheme://: split and redacted only */
};

/* Pointers into the string given to url_split(); lengths, not NULs. */
struct url_parts {
	const char *scheme;          /* NULL: no "scheme://" (a bare path or other text) */
	size_t scheme_len;
	const char *user;            /* NULL: no user information */
	size_t user_len;
	const char *password;        /* NULL: no password */
	size_t password_len;
	const char *hosts;           /* host[:port][,host[:port]...] */
	size_t hosts_len;
	const char *rest;            /* path, query and fragment, to the end */
};

/* Splits s without allocating.  0, or -1 when s has no "scheme://" (then
 * parts->rest is s). */
int url_split(const char *s, struct url_parts *parts);

struct url_host {
	char name[URL_MAX_HOST_LEN + 1];   /* without the [] of an IPv6 address */
	int port;
};

struct url {
	enum url_scheme scheme;
	int tls;                     /* rediss, rediss-sentinel, https */
	int sentinel;                /* redis[s]-sentinel: hosts are sentinels */
	char *user;                  /* owned, decoded; NULL if none */
	char *password;              /* owned, decoded; NULL if none; wiped by url_free */
	struct url_host hosts[URL_MAX_HOSTS];
	size_t nhosts;               /* 1, or more in the sentinel form */
	int db;                      /* redis: the /db number, 0 if none */
	char *master;                /* owned: the sentinel form's #master */
	char *path;                  /* owned: http(s) path and query ("" if none) */
};

/* Parses one of the schemes above into u (url_free() it, also after an
 * error).  0, or -1 with a reason in err that quotes no part of s beyond
 * its scheme.  Ports are 1-65535 (default 6379, 26379 for sentinels, 80,
 * 443); host lists only in the sentinel form; redis URLs take no query. */
int url_parse(const char *s, struct url *u, char *err, size_t errlen);
void url_free(struct url *u);

/* Copies url into out for a message: the password replaced by "***", the
 * query dropped (it may carry tokens), the fragment kept only in the
 * sentinel form (the master name).  Text that is not scheme://... is
 * shown up to its first '?' when it starts with '/', else as "(hidden)". */
void url_redact(const char *url, char *out, size_t outlen);

/* The password of url, raw (as written) and percent-decoded, into the
 * buffers (either may be NULL): 1 if url has one, else 0. */
int url_password(const char *url, char *raw, size_t rawlen, char *decoded, size_t decodedlen);

#endif
