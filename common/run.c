/* run.c -- the run record and the complete() transition (see run.h). */
#include "run.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const status_names[] = { "queued", "running", "succeeded", "failed", "dead", "cancelled" };
static const char *const source_names[] = { "adhoc", "cycle", "fanout", "retry" };

/* The bytes a run id may hold: [0-9A-Za-z_.:-] (a table: this is asked
 * of every id on every read of a stream). */
static const unsigned char id_byte[256] = {
	['-'] = 1, ['.'] = 1, [':'] = 1, ['_'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
	['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
	['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
	['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
	['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
	['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

int run_id_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len > RUN_ID_LEN)
		return 0;
	unsigned ok = 1;
	for (size_t i = 0; i < len; i++)
		ok &= id_byte[(unsigned char)s[i]];
	return (int)ok;
}

void run_clear(struct run *r)
{
	free(r->job);
	free(r->org_id);
	free(r->payload);
	free(r->idempotency_key);
	memset(r, 0, sizeof *r);
}

void run_copy(struct run *dst, const struct run *src)
{
	*dst = *src;
	dst->job = xstrdup(src->job);
	dst->org_id = xstrdup(src->org_id);
	dst->payload = xstrdup(src->payload);
	dst->idempotency_key = xstrdup(src->idempotency_key);
}

int64_t run_backoff_ms(int attempt, const struct backoff *b)
{
	int64_t d = b->base_ms;
	for (int i = 1; i < attempt && d < b->max_ms; i++)
		d *= 2;
	if (d > b->max_ms)
		d = b->max_ms;
	int64_t half = d / 2;
	return half + (int64_t)(rand_u64() % (uint64_t)(d - half + 1));
}

enum run_status run_decide(const struct run *r, const struct run_result *res,
			   const struct backoff *b, int64_t now, int64_t *next_run_at_ms,
			   int *attempt_out)
{
	*attempt_out = r->attempt;
	*next_run_at_ms = 0;
	switch (res->outcome) {
	case RUN_OK:
		return RUN_SUCCEEDED;
	case RUN_CANCEL:
		return RUN_CANCELLED;
	case RUN_DEFER:
		*attempt_out = r->attempt > 0 ? r->attempt - 1 : 0;
		*next_run_at_ms = now + (res->retry_after_ms > 0 ? res->retry_after_ms : 1000);
		return RUN_QUEUED;
	case RUN_RETRY:
		if (r->attempt >= r->max_attempts)
			return RUN_DEAD;
		int64_t d = run_backoff_ms(r->attempt, b);
		if (res->retry_after_ms > d)
			d = res->retry_after_ms;
		*next_run_at_ms = now + d;
		return RUN_FAILED;
	case RUN_FAIL:
	default:
		return RUN_DEAD;
	}
}

const char *run_status_name(enum run_status s)
{
	return (unsigned)s < JR_ARRAY_LEN(status_names) ? status_names[s] : "unknown";
}

/* The index of s in names[0..n), or -1. */
static int name_index(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++)
		if (!strcmp(s, names[i]))
			return (int)i;
	return -1;
}

int run_status_parse(const char *s, enum run_status *out)
{
	int i = name_index(status_names, JR_ARRAY_LEN(status_names), s);
	return i < 0 ? -1 : (*out = (enum run_status)i, 0);
}

const char *run_source_name(enum run_source s)
{
	return (unsigned)s < JR_ARRAY_LEN(source_names) ? source_names[s] : "adhoc";
}

int run_source_parse(const char *s, enum run_source *out)
{
	int i = name_index(source_names, JR_ARRAY_LEN(source_names), s);
	return i < 0 ? -1 : (*out = (enum run_source)i, 0);
}
