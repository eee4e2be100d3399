/* log.h -- one log line per event, JSON (default) or text.
 *
 * A line carries a timestamp, level, event name, message and context fields:
 *   {"ts":"2026-11-28T19:21:35.123Z","level":"info","event":"job_runner_cycle_complete",
 *    "msg":"cycle complete","durationMs":12,"ran":"no_reply_scan"}
 * Text format, for people:
 *   2026-11-28T19:21:35.123Z INFO  job_runner_cycle_complete cycle complete durationMs=12 ran=no_reply_scan
 *
 * Secrets registered with log_add_secret() are replaced by "[REDACTED]"
 * wherever they appear whole in a line (not inside a longer word: a short
 * secret does not mangle unrelated words), as written and as JSON escapes
 * them, as a last line of defence: code should not pass secrets to the
 * logger in the first place.  Text lines escape control characters (\n,
 * \r, \u001b...) in every part, so a value cannot forge a line.
 *
 * Helpers do not log; the top of the call stack logs once (CONTRIBUTING.md).
 * Thread-safe: each line is written with one write(2).
 */
#ifndef JOBRUNNER_COMMON_LOG_H
#define JOBRUNNER_COMMON_LOG_H

#include <stdint.h>
#include <stddef.h>

#include "util.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };
enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT = 1 };

struct log_field {
	const char *key;
	const char *str;     /* string value, or NULL for a number (or JSON null if !is_num) */
	int64_t num;
	int is_num;
};
#define LF_S(k, v) { (k), (v), 0, 0 }
#define LF_I(k, v) { (k), NULL, (int64_t)(v), 1 }

void log_init(enum log_format format, enum log_level min_level);
/* Sends log lines to fd (default: standard output).  `producer enqueue`
 * logs to standard error so that its standard output holds only run ids. */
void log_set_fd(int fd);
/* Registers a secret (copied) to redact from every line; ignores NULL/"". */
void log_add_secret(const char *secret);
int log_enabled(enum log_level level);

void log_fields(enum log_level level, const char *event, const char *msg,
		const struct log_field *fields, size_t nfields);
void log_msg(enum log_level level, const char *event, const char *fmt, ...) JR_PRINTF(3, 4);

/* LOGF(LOG_INFO, "event", "message", LF_S("job", name), LF_I("ms", 12)); */
#define LOGF(level, event, msg, ...)                                          \
	do {                                                                  \
		const struct log_field jr_lf_[] = { __VA_ARGS__ };            \
		log_fields((level), (event), (msg), jr_lf_, JR_ARRAY_LEN(jr_lf_)); \
	} while (0)

/* Parses "debug|info|warn|error" / "json|text": 0 or -1. */
int log_parse_level(const char *s, int *out);
int log_parse_format(const char *s, int *out);

/* Appends s to sb as a JSON string literal (with quotes). */
void json_quote(struct strbuf *sb, const char *s);

#endif
