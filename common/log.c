/* log.c -- see log.h. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "jsoncheck.h"

#define LOG_MAX_SECRETS 16

static enum log_format log_format_ = LOG_FORMAT_JSON;
static enum log_level log_min_ = LOG_INFO;
static int log_fd = STDOUT_FILENO;
static char *log_secrets[LOG_MAX_SECRETS];
static char *log_secrets_json[LOG_MAX_SECRETS];   /* JSON-escaped form when it differs */
static size_t log_nsecrets;
static pthread_mutex_t log_secret_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "debug", "info", "warn", "error" };
static const char *const level_text[] = { "DEBUG", "INFO ", "WARN ", "ERROR" };

void log_init(enum log_format format, enum log_level min_level)
{
	log_format_ = format;
	log_min_ = min_level;
}

void log_add_secret(const char *secret)
{
	if (!secret || !*secret)
		return;
	pthread_mutex_lock(&log_secret_mu);
	int dup = 0;
	for (size_t i = 0; i < log_nsecrets; i++)
		dup |= !strcmp(log_secrets[i], secret);
	if (!dup && log_nsecrets < LOG_MAX_SECRETS) {
		struct strbuf q = STRBUF_INIT;
		json_quote(&q, secret);
		/* without the quotes */
		char *esc = xstrndup(q.buf + 1, q.len - 2);
		sb_release(&q);
		if (!strcmp(esc, secret)) {
			free(esc);
			esc = NULL;
		}
		log_secrets_json[log_nsecrets] = esc;
		log_secrets[log_nsecrets++] = xstrdup(secret);
	}
	pthread_mutex_unlock(&log_secret_mu);
}

void log_set_fd(int fd) { log_fd = fd; }

int log_enabled(enum log_level level) { return level >= log_min_; }

int log_parse_level(const char *s, int *out)
{
	for (int i = 0; i < 4; i++)
		if (!strcasecmp(s, level_names[i])) {
			*out = i;
			return 0;
		}
	if (!strcasecmp(s, "warning")) {
		*out = LOG_WARN;
		return 0;
	}
	return -1;
}

int log_parse_format(const char *s, int *out)
{
	if (!strcasecmp(s, "json"))
		*out = LOG_FORMAT_JSON;
	else if (!strcasecmp(s, "text"))
		*out = LOG_FORMAT_TEXT;
	else
		return -1;
	return 0;
}

void json_quote(struct strbuf *sb, const char *s)
{
	sb_add(sb, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
		/* a run of bytes that go as they are, in one copy */
		const unsigned char *q = p;
		while (*q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\')
			q++;
		if (q != p) {
			sb_add(sb, (const char *)p, (size_t)(q - p));
			p = q;
			if (!*p)
				break;
		}
		switch (*p) {
		case '"': sb_add(sb, "\\\"", 2); break;
		case '\\': sb_add(sb, "\\\\", 2); break;
		case '\n': sb_add(sb, "\\n", 2); break;
		case '\r': sb_add(sb, "\\r", 2); break;
		case '\t': sb_add(sb, "\\t", 2); break;
		default:
			if (*p < 0x20) {
				sb_addf(sb, "\\u%04x", *p);
			} else if (*p < 0x80) {
				sb_add(sb, (const char *)p, 1);
			} else {
				/* a line is valid UTF-8 whatever a value held */
				size_t k = utf8_seq_len(p, strnlen((const char *)p, 4));
				if (k) {
					sb_add(sb, (const char *)p, k);
					p += k - 1;
				} else {
					sb_adds(sb, "\\ufffd");
				}
			}
		}
	}
	sb_add(sb, "\"", 1);
}

/* Text format: s with control characters escaped (\n, \r, \t, \u001b...),
 * so that a value cannot start a forged line or drive a terminal. */
static void text_escaped(struct strbuf *sb, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		const unsigned char *q = p;
		while (*q >= 0x20 && *q != 0x7f)
			q++;
		sb_add(sb, (const char *)p, (size_t)(q - p));
		if (!*q)
			break;
		switch (*q) {
		case '\n': sb_add(sb, "\\n", 2); break;
		case '\r': sb_add(sb, "\\r", 2); break;
		case '\t': sb_add(sb, "\\t", 2); break;
		default: sb_addf(sb, "\\u%04x", *q);
		}
		p = q + 1;
	}
}

static void text_value(struct strbuf *sb, const char *s)
{
	int quote = !*s || strpbrk(s, " \"=") != NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p && !quote; p++)
		quote = *p < 0x20 || *p == 0x7f;
	if (quote)
		json_quote(sb, s);
	else
		sb_adds(sb, s);
}

static int word_char(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       c >= 0x80;
}

/* One left-to-right pass replacing whole occurrences of pat (n bytes) in
 * sb by [REDACTED].  Whole: where pat begins (ends) with a word character,
 * the byte before (after) it is not one, so a short secret never cuts into
 * an unrelated word.  The search resumes after each match in the original
 * text, never in what was inserted: the pass ends for every pattern. */
static void redact_one(struct strbuf *sb, const char *pat, size_t n)
{
	static const char rep[] = "[REDACTED]";
	if (n == 0 || sb->len < n)
		return;
	int wb = word_char((unsigned char)pat[0]), we = word_char((unsigned char)pat[n - 1]);
	struct strbuf out = STRBUF_INIT;
	size_t from = 0, copied = 0;
	int hit_any = 0;
	while (from + n <= sb->len) {
		char *hit = memmem(sb->buf + from, sb->len - from, pat, n);
		if (!hit)
			break;
		size_t off = (size_t)(hit - sb->buf);
		int whole = (!wb || off == 0 || !word_char((unsigned char)sb->buf[off - 1])) &&
			    (!we || off + n == sb->len || !word_char((unsigned char)sb->buf[off + n]));
		if (!whole) {
			from = off + 1;
			continue;
		}
		sb_add(&out, sb->buf + copied, off - copied);
		sb_add(&out, rep, sizeof rep - 1);
		copied = from = off + n;
		hit_any = 1;
	}
	if (!hit_any) {
		sb_release(&out);
		return;
	}
	sb_add(&out, sb->buf + copied, sb->len - copied);
	sb_release(sb);
	*sb = out;
}

/* Replaces every registered secret in sb by [REDACTED]: as written, and as
 * JSON escapes it (a secret with " or \ appears escaped in JSON lines). */
static void redact(struct strbuf *sb)
{
	pthread_mutex_lock(&log_secret_mu);
	for (size_t i = 0; i < log_nsecrets; i++) {
		const char *sec = log_secrets[i];
		redact_one(sb, sec, strlen(sec));
		if (log_secrets_json[i])
			redact_one(sb, log_secrets_json[i], strlen(log_secrets_json[i]));
	}
	pthread_mutex_unlock(&log_secret_mu);
}

void log_fields(enum log_level level, const char *event, const char *msg,
		const struct log_field *f, size_t nf)
{
	if (level < log_min_)
		return;
	char ts[32];
	iso8601_ms(wall_ms(), ts, sizeof ts);
	struct strbuf sb = STRBUF_INIT;
	if (log_format_ == LOG_FORMAT_JSON) {
		sb_addf(&sb, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":", ts, level_names[level]);
		json_quote(&sb, event);
		sb_adds(&sb, ",\"msg\":");
		json_quote(&sb, msg ? msg : "");
		for (size_t i = 0; i < nf; i++) {
			sb_add(&sb, ",", 1);
			json_quote(&sb, f[i].key);
			sb_add(&sb, ":", 1);
			if (f[i].is_num)
				sb_addf(&sb, "%lld", (long long)f[i].num);
			else if (f[i].str)
				json_quote(&sb, f[i].str);
			else
				sb_adds(&sb, "null");
		}
		sb_adds(&sb, "}\n");
	} else {
		sb_addf(&sb, "%s %s ", ts, level_text[level]);
		text_escaped(&sb, event);
		sb_add(&sb, " ", 1);
		text_escaped(&sb, msg ? msg : "");
		for (size_t i = 0; i < nf; i++) {
			sb_add(&sb, " ", 1);
			text_escaped(&sb, f[i].key);
			sb_add(&sb, "=", 1);
			if (f[i].is_num)
				sb_addf(&sb, "%lld", (long long)f[i].num);
			else
				text_value(&sb, f[i].str ? f[i].str : "null");
		}
		sb_adds(&sb, "\n");
	}
	redact(&sb);
	ssize_t off = 0;
	while ((size_t)off < sb.len) {
		ssize_t w = write(log_fd, sb.buf + off, sb.len - (size_t)off);
		if (w <= 0)
			break;
		off += w;
	}
	sb_release(&sb);
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	if (level < log_min_)
		return;
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	log_fields(level, event, buf, NULL, 0);
}
