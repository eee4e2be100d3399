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

#define MAX_ELEMENTS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static redisReply *str_reply(const uint8_t *p, size_t len)
{
	redisReply *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	e->type = REDIS_REPLY_STRING;
	e->str = malloc(len + 1);   /* exact size: ASan sees overreads */
	if (!e->str) {
		free(e);
		return NULL;
	}
	memcpy(e->str, p, len);
	e->str[len] = '\0';
	e->len = len;
	return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReply arr;
	memset(&arr, 0, sizeof arr);
	arr.type = REDIS_REPLY_ARRAY;
	arr.element = calloc(MAX_ELEMENTS, sizeof *arr.element);
	if (!arr.element)
		return 0;
	if (!memchr(data, 0, size)) {
		static const char *const head[] = { "v", "1", "n", "1", "e" };
		for (size_t i = 0; i < 5; i++)
			arr.element[arr.elements++] = str_reply((const uint8_t *)head[i], strlen(head[i]));
		arr.element[arr.elements++] = str_reply(data, size);
	} else {
		size_t pos = 0;
		while (pos <= size && arr.elements < MAX_ELEMENTS) {
			const uint8_t *nul = memchr(data + pos, 0, size - pos);
			size_t len = nul ? (size_t)(nul - (data + pos)) : size - pos;
			redisReply *e;
			if (len > 0 && data[pos] == 1) {
				e = calloc(1, sizeof *e);
				if (e)
					e->type = REDIS_REPLY_NIL;
			} else {
				e = str_reply(data + pos, len);
			}
			if (!e)
				break;
			arr.element[arr.elements++] = e;
			if (!nul)
				break;
			pos += len + 1;
		}
	}
	for (size_t i = 0; i < arr.elements; i++)
		if (!arr.element[i])
			goto out;   /* out of memory building the input */
	size_t bad = 0;
	size_t n = history_decode_entry(&arr, &bad);
	(void)n;
out:
	for (size_t i = 0; i < arr.elements; i++) {
		if (arr.element[i])
			free(arr.element[i]->str);
		free(arr.element[i]);
	}
	free(arr.element);
	return 0;
}
