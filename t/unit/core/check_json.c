/*
 * check_json.c - unit tests for the strict JSON parser (src/json.c): what
 * it accepts and refuses (each refusal names a byte offset), nesting
 * limits, decoded values, and json_quote round trips.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/util.h"
#include "check_run.h"

START_TEST(test_json)
{
	static const char *const good[] = {
		"{}",		"[]",	 "0",
		"-0",		"1.5e3", "\"a\\u00e9\\ud83d\\ude00\"",
		"null",		"true",	 " {\"a\": [1, 2, {\"b\": null}], \"c\": \"\\/\"} ",
		"\"\xc3\xa9\"",
	};
	static const char *const bad[] = {
		"",
		"{",
		"{\"a\":1,}",
		"[1,]",
		"01",
		"1.",
		".5",
		"+1",
		"NaN",
		"{'a':1}",
		"{\"a\":1}x",
		"\"\\ud800\"",
		"\"\\udc00\"",
		"\"\\x\"",
		"\"a\nb\"",
		"\"\xff\"",
		"\"\xc0\xaf\"",
		"{\"a\":1,\"a\":2}",
		"tru",
		"[1 2]",
		"{\"a\" 1}",
		"1e999",
		"// c\n{}",
		"\"\xed\xa0\x80\"",
	};
	char err[128];
	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		struct json *j = json_parse(good[i], strlen(good[i]), err, sizeof err);
		ck_assert_msg(j, "%s: %s", good[i], err);
		json_free(j);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct json *j = json_parse(bad[i], strlen(bad[i]), err, sizeof err);
		ck_assert_msg(!j, "accepted %s", bad[i]);
		ck_assert_msg(strncmp(err, "at byte ", 8) == 0, "%s", err);
	}
	/* Depth limit. */
	char deep[300];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	deep[200] = '\0';
	ck_assert_ptr_null(json_parse(deep, 200, err, sizeof err));
	ck_assert(strstr(err, "nested deeper"));
	/* Values. */
	const char *doc = "{\"s\":\"x\\ty\",\"i\":-12,\"f\":2.5,\"big\":99999999999999999999,"
			  "\"a\":[true,false]}";
	struct json *j = json_parse(doc, strlen(doc), err, sizeof err);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_get(j, "s")->str, "x\ty");
	ck_assert(json_get(j, "i")->is_int && json_get(j, "i")->i == -12);
	ck_assert(!json_get(j, "f")->is_int);
	ck_assert(!json_get(j, "big")->is_int);
	ck_assert_int_eq(json_get(j, "a")->n, 2);
	ck_assert_ptr_null(json_get(j, "nope"));
	json_free(j);
	/* Quoting round-trips. */
	char *q = NULL;
	size_t qn = 0;
	json_quote(&q, &qn, "a\"b\\c\n\x01", 7);
	ck_assert_str_eq(q, "\"a\\\"b\\\\c\\u000a\\u0001\"");
	j = json_parse(q, qn, err, sizeof err);
	ck_assert_str_eq(j->str, "a\"b\\c\n\x01");
	json_free(j);
	free(q);
}
END_TEST

START_TEST(test_json_numbers)
{
	char err[128];
	static const struct {
		const char *text;
		bool is_int;
		long long i;
	} nums[] = {
		{"0", true, 0},
		{"-1", true, -1},
		{"9223372036854775807", true, 9223372036854775807LL},
		{"9223372036854775808", false, 0},
		{"1e2", false, 0},
		{"1.0", false, 0},
	};
	for (size_t k = 0; k < ARRAY_LEN(nums); k++) {
		struct json *j = json_parse(nums[k].text, strlen(nums[k].text), err, sizeof err);
		ck_assert_msg(j, "%s: %s", nums[k].text, err);
		ck_assert_int_eq(j->type, JSON_NUMBER);
		ck_assert_msg(j->is_int == nums[k].is_int, "%s", nums[k].text);
		if (j->is_int)
			ck_assert_int_eq(j->i, nums[k].i);
		json_free(j);
	}
	/* Embedded NUL in a string is kept (and measured); in a key it is refused. */
	struct json *j = json_parse("\"a\\u0000b\"", 10, err, sizeof err);
	ck_assert_ptr_nonnull(j);
	ck_assert_int_eq(j->len, 3);
	json_free(j);
	ck_assert_ptr_null(json_parse("{\"a\\u0000\":1}", 12, err, sizeof err));
	ck_assert_msg(strstr(err, "NUL"), "%s", err);
	/* A short error buffer is still terminated. */
	char tiny[8];
	ck_assert_ptr_null(json_parse("[", 1, tiny, sizeof tiny));
	ck_assert_int_lt(strlen(tiny), sizeof tiny);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_json);
	tcase_add_test(tc, test_json_numbers);
	suite_add_tcase(s, tc);
	return check_run(s);
}
