/* unit.h -- a minimal unit test runner: CHECK() records a failure with its
 * location and carries on; each test file's main() calls unit_run(). */
#ifndef JOBRUNNER_TESTS_UNIT_H
#define JOBRUNNER_TESTS_UNIT_H

#include <stdio.h>
#include <string.h>

extern int unit_failures;
extern int unit_checks;

#define CHECK(cond)                                                             \
	do {                                                                    \
		unit_checks++;                                                  \
		if (!(cond)) {                                                  \
			unit_failures++;                                        \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                               \
	} while (0)
static inline int unit_streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }
#define CHECK_STR(a, b) CHECK(unit_streq((a), (b)))

struct unit_test {
	const char *name;
	void (*fn)(void);
};

/* A TCP port on 127.0.0.1 that was free a moment ago (for test servers). */
int unit_free_port(void);

/* Runs every test, prints "N passed, N failed" and returns main's exit code. */
int unit_run(const struct unit_test *tests, size_t n);

#endif
