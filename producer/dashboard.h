/* dashboard.h -- the web dashboard at /dashboard: its embedded files, the
 * login/logout/session routes, and the session cookie as a second
 * credential of the API (dashboard.c; sessions themselves: common/dashauth.h).
 *
 * The files under producer/dashboard/ are embedded in the producer at build
 * time by cmake/embed_files.cmake (plain and gzipped, with an ETag), the way
 * common/sql/ migrations are; nothing is read from disk at run time.
 */
#ifndef JOBRUNNER_PRODUCER_DASHBOARD_H
#define JOBRUNNER_PRODUCER_DASHBOARD_H

#include <stddef.h>

struct httpd_request;
struct httpd_response;
struct dashauth;
struct config;

struct dash_asset {
	const char *name;               /* "index.html", "app.js", ... */
	const char *ctype;
	const unsigned char *body;
	size_t len;
	const unsigned char *gz;        /* the same bytes, gzipped */
	size_t gzlen;
	const char *etag;               /* quoted, of the uncompressed bytes */
};
extern const struct dash_asset dash_assets[];
extern const int dash_assets_count;

/* What the handlers need from the API's context (routes.c). */
struct dashauth *producer_dashauth(void *app);
const struct config *producer_config(void *app);

/* GET /dashboard and GET /dashboard/{file}. */
void dash_h_index(struct httpd_request *req, struct httpd_response *resp);
void dash_h_file(struct httpd_request *req, struct httpd_response *resp);
/* POST /dashboard/login {"token"}: sets the cookie, answers {"csrf","expiresAt"};
 * 401 wrong token, 429 too many attempts (Retry-After). */
void dash_h_login(struct httpd_request *req, struct httpd_response *resp);
/* POST /dashboard/logout: clears the cookie, revokes the session. */
void dash_h_logout(struct httpd_request *req, struct httpd_response *resp);
/* GET /dashboard/session: {"authenticated", "lang", "csrf"?, "expiresAt"?}
 * (no credential needed; lang from Accept-Language). */
void dash_h_session(struct httpd_request *req, struct httpd_response *resp);

/* httpd's alt_auth: the session cookie, with the CSRF rules of dashauth.h
 * for state-changing methods. */
int dash_alt_auth(const struct httpd_request *req, const char **code, const char **msg);

#endif
