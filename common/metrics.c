/* metrics.c -- lock-free counters, gauges and histograms; Prometheus text.
 *
 * Layout.  A registry is a fixed array of family pointers; a family is a
 * fixed array of series pointers.  Both arrays are append-only: a writer
 * (registration, or the first metrics_with() of a new label tuple) takes
 * the owner's mutex, fills the next slot and then publishes it by bumping
 * the count with a release store.  Readers (metrics_with's lookup, render)
 * load the count with acquire and read only the slots below it, without a
 * lock.  Nothing is removed before metrics_free(), so a pointer handed out
 * stays valid and a reader never sees a half-built object.
 *
 * Values.  Counters are an atomic uint64 (fetch_add).  Gauges are a double
 * stored as its bit pattern in an atomic uint64 (store, or a CAS loop for
 * adds), which avoids relying on libatomic for _Atomic double.  Histograms
 * keep one non-cumulative atomic count per bucket (plus +Inf) and the sum in
 * whole microseconds, so an observation is two fetch_adds; the cumulative
 * counts and _count are computed at render time from the same loads, so
 * _count always equals the +Inf bucket in one scrape.  Bucket bounds are
 * compared in integer microseconds, so an observation of exactly 5 ms lands
 * in le="0.005" without floating-point doubt.
 *
 * Registry choice.  An explicit struct metrics, plus one documented
 * process-wide instance (metrics_default).  Tests build their own registry
 * and compare exact text; the binaries use the default one because the
 * code that counts (queue backends counting reconnects, workers timing
 * runs) is spread over modules that share no other context, and threading
 * a registry pointer through all of them buys nothing in one process.
 *
 * Bounded memory: METRICS_MAX_FAMILIES families, METRICS_MAX_SERIES tuples
 * per family plus one "_overflow" tuple that absorbs every later one, label
 * values cut at METRICS_MAX_LABEL_LEN bytes.
 *
 * Rejected alternatives: a mutex per update (contention on the worker hot
 * path for no gain); per-thread shards summed at scrape (faster under heavy
 * contention, but more memory and code than our update rates need); a hash
 * map for label lookup (tuples per family are few; callers cache series).
 */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* types                                                               */
/* ------------------------------------------------------------------ */

struct metric_series {
	struct metric *fam;
	char *values[2];
	size_t vlen[2];
	char *labels;                   /* k1="v1",k2="v2" (escaped), or "" */
	_Atomic uint64_t u;             /* counter value, or gauge double bits */
	_Atomic uint64_t sum_us;        /* histogram */
	_Atomic uint64_t *buckets;      /* histogram: nbounds + 1 (+Inf) */
};

struct metric {
	enum metric_type type;
	char *name;
	char *help;
	char *keys[2];
	int nkeys;
	metrics_collect_fn *fn;         /* callback family when non-NULL */
	void *ctx;
	uint64_t bounds_us[METRICS_MAX_BUCKETS];
	size_t nbounds;
	pthread_mutex_t mu;
	struct metric_series *series[METRICS_MAX_SERIES];
	_Atomic size_t nseries;
	struct metric_series *_Atomic overflow;
};

struct metrics {
	pthread_mutex_t mu;
	struct metric *fams[METRICS_MAX_FAMILIES];
	_Atomic size_t nfams;
};

struct metrics_emitter {
	const struct metric *fam;
	struct strbuf *out;
};

const double METRICS_DEFAULT_BUCKETS_S[14] = {
	0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};

static const char OVERFLOW_VALUE[] = "_overflow";

/* ------------------------------------------------------------------ */
/* text helpers                                                        */
/* ------------------------------------------------------------------ */

static int valid_name(const char *s, int allow_colon)
{
	if (!s || !*s)
		return 0;
	for (const char *p = s; *p; p++) {
		char c = *p;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			 (allow_colon && c == ':') || (p != s && c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

/* HELP text escaping: backslash and newline.  Label values also escape ". */
static void add_escaped(struct strbuf *sb, const char *s, size_t n, int quote)
{
	for (size_t i = 0; i < n; i++) {
		switch (s[i]) {
		case '\\': sb_add(sb, "\\\\", 2); break;
		case '\n': sb_add(sb, "\\n", 2); break;
		case '"':
			if (quote)
				sb_add(sb, "\\\"", 2);
			else
				sb_add(sb, "\"", 1);
			break;
		default: sb_add(sb, s + i, 1);
		}
	}
}

/* Writes a sample value the way Prometheus parses it back exactly. */
static void add_double(struct strbuf *sb, double v)
{
	if (isnan(v)) {
		sb_adds(sb, "NaN");
	} else if (isinf(v)) {
		sb_adds(sb, v > 0 ? "+Inf" : "-Inf");
	} else if (v == 0) {
		sb_adds(sb, "0");
	} else if (fabs(v) < 1e15 && v == trunc(v)) {
		sb_addf(sb, "%.0f", v);
	} else {
		char buf[40];
		snprintf(buf, sizeof buf, "%.15g", v);
		if (strtod(buf, NULL) != v)
			snprintf(buf, sizeof buf, "%.17g", v);
		sb_adds(sb, buf);
	}
}

/* k1="v1",k2="v2" for the family's keys. */
static void add_labels(struct strbuf *sb, const struct metric *fam, const char *const *vals,
		       const size_t *lens)
{
	for (int i = 0; i < fam->nkeys; i++) {
		if (i)
			sb_add(sb, ",", 1);
		sb_adds(sb, fam->keys[i]);
		sb_add(sb, "=\"", 2);
		add_escaped(sb, vals[i], lens[i], 1);
		sb_add(sb, "\"", 1);
	}
}

static uint64_t dbl_bits(double v)
{
	uint64_t u;
	memcpy(&u, &v, sizeof u);
	return u;
}

static double bits_dbl(uint64_t u)
{
	double v;
	memcpy(&v, &u, sizeof v);
	return v;
}

/* ------------------------------------------------------------------ */
/* series                                                              */
/* ------------------------------------------------------------------ */

static struct metric_series *series_new(struct metric *fam, const char *const *vals,
					const size_t *lens)
{
	struct metric_series *s = xcalloc(1, sizeof *s);
	s->fam = fam;
	for (int i = 0; i < fam->nkeys; i++) {
		s->values[i] = xstrndup(vals[i], lens[i]);
		s->vlen[i] = lens[i];
	}
	struct strbuf sb = STRBUF_INIT;
	add_labels(&sb, fam, vals, lens);
	s->labels = sb_detach(&sb);
	if (fam->type == METRIC_HISTOGRAM)
		s->buckets = xcalloc(fam->nbounds + 1, sizeof *s->buckets);
	return s;
}

static void series_free(struct metric_series *s)
{
	if (!s)
		return;
	free(s->values[0]);
	free(s->values[1]);
	free(s->labels);
	free((void *)s->buckets);
	free(s);
}

static int series_match(const struct metric_series *s, const char *const *vals,
			const size_t *lens)
{
	for (int i = 0; i < s->fam->nkeys; i++) {
		if (s->vlen[i] != lens[i] || memcmp(s->values[i], vals[i], lens[i]) != 0)
			return 0;
	}
	return 1;
}

static struct metric_series *series_find(struct metric *fam, size_t from, size_t to,
					 const char *const *vals, const size_t *lens)
{
	for (size_t i = from; i < to; i++) {
		if (series_match(fam->series[i], vals, lens))
			return fam->series[i];
	}
	return NULL;
}

struct metric_series *metrics_with(struct metric *fam, const char *v1, const char *v2)
{
	if (!fam || fam->fn)
		return NULL;
	const char *vals[2] = { v1 ? v1 : "", v2 ? v2 : "" };
	size_t lens[2] = { strnlen(vals[0], METRICS_MAX_LABEL_LEN),
			   strnlen(vals[1], METRICS_MAX_LABEL_LEN) };

	size_t n = atomic_load_explicit(&fam->nseries, memory_order_acquire);
	struct metric_series *s = series_find(fam, 0, n, vals, lens);
	if (s)
		return s;
	if (n == METRICS_MAX_SERIES) {
		s = atomic_load_explicit(&fam->overflow, memory_order_acquire);
		if (s)
			return s;
	}

	pthread_mutex_lock(&fam->mu);
	size_t n2 = atomic_load_explicit(&fam->nseries, memory_order_relaxed);
	s = series_find(fam, n, n2, vals, lens);
	if (!s && n2 < METRICS_MAX_SERIES) {
		s = series_new(fam, vals, lens);
		fam->series[n2] = s;
		atomic_store_explicit(&fam->nseries, n2 + 1, memory_order_release);
	} else if (!s) {
		s = atomic_load_explicit(&fam->overflow, memory_order_relaxed);
		if (!s) {
			const char *ov[2] = { OVERFLOW_VALUE, OVERFLOW_VALUE };
			size_t ol[2] = { sizeof OVERFLOW_VALUE - 1, sizeof OVERFLOW_VALUE - 1 };
			s = series_new(fam, ov, ol);
			atomic_store_explicit(&fam->overflow, s, memory_order_release);
		}
	}
	pthread_mutex_unlock(&fam->mu);
	return s;
}

/* ------------------------------------------------------------------ */
/* updates                                                             */
/* ------------------------------------------------------------------ */

void metrics_add(struct metric_series *s, uint64_t n)
{
	if (!s)
		return;
	if (s->fam->type == METRIC_COUNTER)
		atomic_fetch_add_explicit(&s->u, n, memory_order_relaxed);
	else if (s->fam->type == METRIC_GAUGE)
		metrics_gauge_add(s, (double)n);
}

void metrics_inc(struct metric_series *s)
{
	metrics_add(s, 1);
}

void metrics_set(struct metric_series *s, double v)
{
	if (!s || s->fam->type != METRIC_GAUGE)
		return;
	atomic_store_explicit(&s->u, dbl_bits(v), memory_order_relaxed);
}

void metrics_gauge_add(struct metric_series *s, double delta)
{
	if (!s || s->fam->type != METRIC_GAUGE)
		return;
	uint64_t old = atomic_load_explicit(&s->u, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&s->u, &old,
						      dbl_bits(bits_dbl(old) + delta),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

void metrics_observe_ms(struct metric_series *s, double ms)
{
	if (!s || s->fam->type != METRIC_HISTOGRAM)
		return;
	uint64_t us = 0;
	if (ms > 0)      /* NaN and negatives count as 0; cap at ~31 years */
		us = ms < 1e15 ? (uint64_t)llround(ms * 1000.0) : (uint64_t)1e18;
	const struct metric *fam = s->fam;
	size_t i = 0;
	while (i < fam->nbounds && us > fam->bounds_us[i])
		i++;
	atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->sum_us, us, memory_order_relaxed);
}

double metrics_value(const struct metric_series *s)
{
	if (!s)
		return 0;
	struct metric_series *m = (struct metric_series *)s;
	uint64_t u = atomic_load_explicit(&m->u, memory_order_relaxed);
	return s->fam->type == METRIC_GAUGE ? bits_dbl(u) : (double)u;
}

uint64_t metrics_count(const struct metric_series *s)
{
	if (!s || s->fam->type != METRIC_HISTOGRAM)
		return 0;
	uint64_t n = 0;
	for (size_t i = 0; i <= s->fam->nbounds; i++)
		n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
	return n;
}

/* ------------------------------------------------------------------ */
/* registry                                                            */
/* ------------------------------------------------------------------ */

struct metrics *metrics_new(void)
{
	struct metrics *reg = xcalloc(1, sizeof *reg);
	pthread_mutex_init(&reg->mu, NULL);
	return reg;
}

static void fam_free(struct metric *fam)
{
	size_t n = atomic_load(&fam->nseries);
	for (size_t i = 0; i < n; i++)
		series_free(fam->series[i]);
	series_free(atomic_load(&fam->overflow));
	pthread_mutex_destroy(&fam->mu);
	free(fam->name);
	free(fam->help);
	free(fam->keys[0]);
	free(fam->keys[1]);
	free(fam);
}

void metrics_free(struct metrics *reg)
{
	if (!reg)
		return;
	size_t n = atomic_load(&reg->nfams);
	for (size_t i = 0; i < n; i++)
		fam_free(reg->fams[i]);
	pthread_mutex_destroy(&reg->mu);
	free(reg);
}

static struct metrics *default_reg;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void)
{
	default_reg = metrics_new();
}

struct metrics *metrics_default(void)
{
	pthread_once(&default_once, default_init);
	return default_reg;
}

static int same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Finds or adds a family; NULL on invalid arguments or conflicts. */
static struct metric *fam_register(struct metrics *reg, enum metric_type type,
				   const char *name, const char *help,
				   const char *key1, const char *key2,
				   const uint64_t *bounds_us, size_t nbounds,
				   metrics_collect_fn *fn, void *ctx)
{
	if (!reg || !valid_name(name, 1) || (key2 && !key1))
		return NULL;
	const char *keys[2] = { key1, key2 };
	int nkeys = key2 ? 2 : key1 ? 1 : 0;
	for (int i = 0; i < nkeys; i++) {
		if (!valid_name(keys[i], 0) || strcmp(keys[i], "le") == 0 ||
		    strncmp(keys[i], "__", 2) == 0)
			return NULL;
	}
	if (nkeys == 2 && strcmp(key1, key2) == 0)
		return NULL;

	struct metric *fam = NULL;
	pthread_mutex_lock(&reg->mu);
	size_t n = atomic_load_explicit(&reg->nfams, memory_order_relaxed);
	for (size_t i = 0; i < n; i++) {
		struct metric *f = reg->fams[i];
		if (strcmp(f->name, name) != 0)
			continue;
		if (f->type == type && same_str(f->keys[0], key1) && same_str(f->keys[1], key2) &&
		    f->fn == fn && f->ctx == ctx && f->nbounds == nbounds &&
		    (nbounds == 0 || memcmp(f->bounds_us, bounds_us, nbounds * sizeof *bounds_us) == 0))
			fam = f;
		goto out;
	}
	if (n == METRICS_MAX_FAMILIES)
		goto out;
	fam = xcalloc(1, sizeof *fam);
	fam->type = type;
	fam->name = xstrdup(name);
	fam->help = xstrdup(help ? help : "");
	fam->keys[0] = xstrdup(key1);
	fam->keys[1] = xstrdup(key2);
	fam->nkeys = nkeys;
	fam->fn = fn;
	fam->ctx = ctx;
	if (nbounds)
		memcpy(fam->bounds_us, bounds_us, nbounds * sizeof *bounds_us);
	fam->nbounds = nbounds;
	pthread_mutex_init(&fam->mu, NULL);
	if (nkeys == 0 && !fn) {
		/* the one series exists from the start, so it renders as 0 */
		fam->series[0] = series_new(fam, NULL, NULL);
		atomic_store_explicit(&fam->nseries, 1, memory_order_release);
	}
	reg->fams[n] = fam;
	atomic_store_explicit(&reg->nfams, n + 1, memory_order_release);
out:
	pthread_mutex_unlock(&reg->mu);
	return fam;
}

struct metric *metrics_counter(struct metrics *reg, const char *name, const char *help,
			       const char *key1, const char *key2)
{
	return fam_register(reg, METRIC_COUNTER, name, help, key1, key2, NULL, 0, NULL, NULL);
}

struct metric *metrics_gauge(struct metrics *reg, const char *name, const char *help,
			     const char *key1, const char *key2)
{
	return fam_register(reg, METRIC_GAUGE, name, help, key1, key2, NULL, 0, NULL, NULL);
}

struct metric *metrics_histogram(struct metrics *reg, const char *name, const char *help,
				 const char *key1, const char *key2,
				 const double *bounds_s, size_t nbounds)
{
	if (!bounds_s) {
		bounds_s = METRICS_DEFAULT_BUCKETS_S;
		nbounds = JR_ARRAY_LEN(METRICS_DEFAULT_BUCKETS_S);
	}
	if (nbounds == 0 || nbounds > METRICS_MAX_BUCKETS)
		return NULL;
	uint64_t us[METRICS_MAX_BUCKETS];
	for (size_t i = 0; i < nbounds; i++) {
		if (!(bounds_s[i] >= 0 && bounds_s[i] < 1e12))     /* also rejects NaN */
			return NULL;
		us[i] = (uint64_t)llround(bounds_s[i] * 1e6);
		if (i && us[i] <= us[i - 1])
			return NULL;
	}
	return fam_register(reg, METRIC_HISTOGRAM, name, help, key1, key2, us, nbounds,
			    NULL, NULL);
}

struct metric *metrics_callback(struct metrics *reg, enum metric_type type,
				const char *name, const char *help,
				const char *key1, const char *key2,
				metrics_collect_fn *fn, void *ctx)
{
	if (!fn || (type != METRIC_COUNTER && type != METRIC_GAUGE))
		return NULL;
	return fam_register(reg, type, name, help, key1, key2, NULL, 0, fn, ctx);
}

/* ------------------------------------------------------------------ */
/* exposition                                                          */
/* ------------------------------------------------------------------ */

static const char *type_name(enum metric_type t)
{
	switch (t) {
	case METRIC_COUNTER: return "counter";
	case METRIC_GAUGE: return "gauge";
	case METRIC_HISTOGRAM: return "histogram";
	}
	return "untyped";
}

/* name{labels} or name{labels,extra} or name{extra} or name. */
static void add_sample_name(struct strbuf *sb, const char *name, const char *suffix,
			    const char *labels, const char *extra)
{
	sb_adds(sb, name);
	if (suffix)
		sb_adds(sb, suffix);
	int has = labels && *labels;
	if (!has && !extra)
		return;
	sb_add(sb, "{", 1);
	if (has)
		sb_adds(sb, labels);
	if (extra) {
		if (has)
			sb_add(sb, ",", 1);
		sb_adds(sb, extra);
	}
	sb_add(sb, "}", 1);
}

void metrics_emit(struct metrics_emitter *emit, double value, const char *v1, const char *v2)
{
	if (!emit)
		return;
	const char *vals[2] = { v1 ? v1 : "", v2 ? v2 : "" };
	size_t lens[2] = { strnlen(vals[0], METRICS_MAX_LABEL_LEN),
			   strnlen(vals[1], METRICS_MAX_LABEL_LEN) };
	struct strbuf labels = STRBUF_INIT;
	add_labels(&labels, emit->fam, vals, lens);
	add_sample_name(emit->out, emit->fam->name, NULL, labels.buf, NULL);
	sb_add(emit->out, " ", 1);
	add_double(emit->out, value);
	sb_add(emit->out, "\n", 1);
	sb_release(&labels);
}

static void render_histogram(struct strbuf *out, const struct metric *fam,
			     struct metric_series *s)
{
	uint64_t cum = 0;
	char le[64];
	for (size_t i = 0; i <= fam->nbounds; i++) {
		cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
		if (i < fam->nbounds) {
			struct strbuf b = STRBUF_INIT;
			add_double(&b, (double)fam->bounds_us[i] / 1e6);
			snprintf(le, sizeof le, "le=\"%s\"", b.buf);
			sb_release(&b);
		} else {
			snprintf(le, sizeof le, "le=\"+Inf\"");
		}
		add_sample_name(out, fam->name, "_bucket", s->labels, le);
		sb_addf(out, " %llu\n", (unsigned long long)cum);
	}
	add_sample_name(out, fam->name, "_sum", s->labels, NULL);
	sb_add(out, " ", 1);
	add_double(out, (double)atomic_load_explicit(&s->sum_us, memory_order_relaxed) / 1e6);
	sb_add(out, "\n", 1);
	add_sample_name(out, fam->name, "_count", s->labels, NULL);
	sb_addf(out, " %llu\n", (unsigned long long)cum);
}

static void render_series(struct strbuf *out, const struct metric *fam, struct metric_series *s)
{
	switch (fam->type) {
	case METRIC_COUNTER:
		add_sample_name(out, fam->name, NULL, s->labels, NULL);
		sb_addf(out, " %llu\n",
			(unsigned long long)atomic_load_explicit(&s->u, memory_order_relaxed));
		break;
	case METRIC_GAUGE:
		add_sample_name(out, fam->name, NULL, s->labels, NULL);
		sb_add(out, " ", 1);
		add_double(out, metrics_value(s));
		sb_add(out, "\n", 1);
		break;
	case METRIC_HISTOGRAM:
		render_histogram(out, fam, s);
		break;
	}
}

void metrics_render(struct metrics *reg, struct strbuf *out)
{
	if (!reg)
		return;
	size_t nf = atomic_load_explicit(&reg->nfams, memory_order_acquire);
	for (size_t i = 0; i < nf; i++) {
		struct metric *fam = reg->fams[i];
		sb_addf(out, "# HELP %s ", fam->name);
		add_escaped(out, fam->help, strlen(fam->help), 0);
		sb_addf(out, "\n# TYPE %s %s\n", fam->name, type_name(fam->type));
		if (fam->fn) {
			struct metrics_emitter em = { fam, out };
			fam->fn(fam->ctx, &em);
			continue;
		}
		size_t ns = atomic_load_explicit(&fam->nseries, memory_order_acquire);
		for (size_t j = 0; j < ns; j++)
			render_series(out, fam, fam->series[j]);
		struct metric_series *ov = atomic_load_explicit(&fam->overflow, memory_order_acquire);
		if (ov)
			render_series(out, fam, ov);
	}
}
