/* fuzz_rentry.c -- libFuzzer target: decoding a Redis stream entry
 * (rentry_parse() in common/rentry.c), the code every consumer runs on
 * whatever another program XADDed to the runs stream.
 *
 * Input layout: the first byte picks the entry id shape; the rest is the
 * entry's flat field array, one element per NUL-separated chunk, built as
 * the redisReply that XREADGROUP would return.  An element that starts with
 * the byte 0x01 becomes a nil reply and one that starts with 0x02 an
 * integer reply, so the decoder's type checks are exercised too.
 * Invariants: rentry_parse() returns 0 or -1; on -1 the message is a
 * non-empty NUL-terminated string; on 0 a run entry has an id and a job
 * (a tick has neither); run_clear() releases whatever it returned.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "rentry.h"
#include "run.h"

#include "fuzz_fields.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static const char *const ids[] = { "1700000000000-0", "0-1", "", "18446744073709551615-1",
					   "abc", "-5-5" };
	const char *entry_id = ids[data[0] % (sizeof ids / sizeof ids[0])];
	data++;
	size--;

	redisReply arr;
	if (fuzz_array_init(&arr))
		return 0;
	fuzz_add_chunks(&arr, data, size, 1);

	struct run r;
	memset(&r, 0, sizeof r);
	int64_t slot = -1;
	char err[256];
	memset(err, 'x', sizeof err);
	int rc = rentry_parse(&arr, entry_id, 5, &r, &slot, err, sizeof err);
	if (rc != 0 && rc != -1)
		abort();
	if (rc == 0 && !r.is_tick && (!r.id[0] || !r.job))
		abort();
	if (rc == -1 && (!memchr(err, '\0', sizeof err) || err[0] == '\0'))
		abort();
	run_clear(&r);
	fuzz_array_free(&arr);
	return 0;
}
