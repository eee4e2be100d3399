/* fuzz_events.c -- libFuzzer target: decoding a jr:events entry
 * (history_decode_entry() in common/history.c, on revent_decode() of
 * common/revent.c), the code every history writer runs on what the
 * consumers -- or anyone with write access to Redis -- appended to the
 * events stream.
 *
 * Input layout: the entry's flat field array, one element per
 * NUL-separated chunk, built as the redisReply that XREADGROUP returns (an
 * element starting with 0x01 becomes a nil reply).  Input without a NUL is
 * taken as the `e` value itself: {v, 1, n, 1, e, <input>}, so the JSON
 * decoder gets the most attention.
 * Invariants (checked by history_decode_entry): every row has a valid run
 * id, a job and a status; a payload it keeps passes the payload rule; an
 * org is identifier text; an error is bounded.  Nothing leaks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "history.h"

#include "fuzz_fields.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReply arr;
	if (fuzz_array_init(&arr))
		return 0;
	if (!memchr(data, 0, size)) {
		static const char *const head[] = { "v", "1", "n", "1", "e" };
		for (size_t i = 0; i < 5; i++)
			arr.element[arr.elements++] = fuzz_str_reply((const uint8_t *)head[i], strlen(head[i]));
		arr.element[arr.elements++] = fuzz_str_reply(data, size);
	} else {
		fuzz_add_chunks(&arr, data, size, 0);
	}
	for (size_t i = 0; i < arr.elements; i++)
		if (!arr.element[i])
			goto out;   /* out of memory building the input */
	size_t bad = 0;
	size_t n = history_decode_entry(&arr, &bad);
	(void)n;
out:
	fuzz_array_free(&arr);
	return 0;
}
