/* fuzz_config.c -- libFuzzer target: the configuration parser
 * (config_load() in common/config.c), which reads every variable of the
 * environment table and the command line at start-up.
 *
 * Input layout: the first byte picks the role (producer or consumer); the
 * rest is NUL-separated chunks.  A chunk starting with "-" is an argument
 * (argv, in order); any other chunk NAME=VALUE is set in the environment
 * (NAME up to the first '=').  The environment is emptied at start and
 * after every input.  --help, -h and --print-config-reference are skipped
 * (they only print the table).
 * Invariants: config_load() returns CONFIG_OK, CONFIG_ERR or CONFIG_HELP;
 * on CONFIG_ERR the message is a non-empty NUL-terminated string that does
 * not contain the value of a secret variable (API_TOKEN, META_APP_SECRET,
 * DATABASE_URL) of 8 bytes or more (unless another, non-secret input holds
 * that text too, or the message says it whatever the value is); on CONFIG_OK an API token has at least
 * CONFIG_MIN_TOKEN_LEN characters, DATABASE_URL is set, a consumer name
 * is at most 100 characters; config_free() releases everything.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define MAX_ARGS 32
#define MAX_ENV 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	clearenv();
	return 0;
}

static const char *const secret_vars[] = { "API_TOKEN", "META_APP_SECRET", "DATABASE_URL" };

/* 1 when the text of secret i is in the message whatever the secret's
 * value: config_load() again with the value replaced by other bytes of the
 * same length still says it ("PI_TOKEN" is in "invalid API_TOKEN: ..."). */
static int in_template(enum config_role role, int argc, char **argv, size_t i, const char *secret)
{
	size_t n = strlen(secret);
	char *other = malloc(n + 1);
	if (!other)
		return 1;
	memset(other, secret[0] == 'Z' ? 'Y' : 'Z', n);
	other[n] = '\0';
	setenv(secret_vars[i], other, 1);
	struct config cfg;
	char err[512] = "";
	config_load(&cfg, role, argc, argv, err, sizeof err);
	config_free(&cfg);
	setenv(secret_vars[i], secret, 1);
	free(other);
	return strstr(err, secret) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	enum config_role role = data[0] & 1 ? ROLE_CONSUMER : ROLE_PRODUCER;
	data++;
	size--;
	char *buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';

	char *argv[MAX_ARGS + 2];
	int argc = 0;
	argv[argc++] = "fuzz";
	char *names[MAX_ENV];
	size_t nenv = 0;
	for (char *p = buf; p <= buf + size;) {
		size_t len = strlen(p);
		if (p[0] == '-') {
			if (strcmp(p, "--help") && strcmp(p, "-h") && strcmp(p, "--print-config-reference") &&
			    argc < MAX_ARGS + 1)
				argv[argc++] = p;
		} else {
			char *eq = strchr(p, '=');
			if (eq && eq != p && nenv < MAX_ENV) {
				*eq = '\0';
				if (setenv(p, eq + 1, 1) == 0)
					names[nenv++] = p;
			}
		}
		p += len + 1;
	}
	argv[argc] = NULL;

	/* the secret values given, to look for in the message -- unless a
	 * value that is not secret holds the same text (the message may quote
	 * that one: WORKER_MODE=x<the database URL>) */
	char *secrets[3] = { 0 };
	for (size_t i = 0; i < 3; i++) {
		const char *v = getenv(secret_vars[i]);
		if (!v || strlen(v) < 8)
			continue;
		int quoted_elsewhere = 0;
		for (size_t k = 0; k < nenv; k++) {
			int is_secret = 0;
			for (size_t j = 0; j < 3; j++)
				is_secret |= !strcmp(names[k], secret_vars[j]);
			const char *o = getenv(names[k]);
			if (!is_secret && o && strstr(o, v))
				quoted_elsewhere = 1;
		}
		for (int k = 1; k < argc; k++)
			if (strstr(argv[k], v))
				quoted_elsewhere = 1;
		if (!quoted_elsewhere)
			secrets[i] = strdup(v);
	}

	struct config cfg;
	char err[512];
	memset(err, 'x', sizeof err);
	int rc = config_load(&cfg, role, argc, argv, err, sizeof err);
	if (rc != CONFIG_OK && rc != CONFIG_ERR && rc != CONFIG_HELP)
		abort();
	if (rc == CONFIG_ERR) {
		if (!memchr(err, '\0', sizeof err) || err[0] == '\0')
			abort();
		for (size_t i = 0; i < 3; i++)
			if (secrets[i] && strstr(err, secrets[i]) && !in_template(role, argc, argv, i, secrets[i]))
				abort();   /* a secret in a message that is logged */
	}
	if (rc == CONFIG_OK) {
		if (cfg.api_token && strlen(cfg.api_token) < CONFIG_MIN_TOKEN_LEN)
			abort();
		if (!cfg.database_url || !cfg.consumer_name || strlen(cfg.consumer_name) > 100)
			abort();
	}
	config_free(&cfg);
	for (size_t i = 0; i < 3; i++)
		free(secrets[i]);
	for (size_t i = 0; i < nenv; i++)
		unsetenv(names[i]);
	free(buf);
	return 0;
}
