/*
 * check_sched.c - unit tests for the scheduler's pure parts (src/sched.c):
 * platform canonicalization (sorting, duplicates, escaping, undeclared
 * keys), bot properties (first device plus worker properties, filtered
 * to declared keys), platform matching, stage names and UUIDs.  The Lua
 * transitions are exercised end to end by t/integ/test_exec.py.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "core/cfg.h"
#include "domain/sched.h"
#include "check_run.h"

typedef Build__Bazel__Remote__Execution__V2__Platform Platform;
typedef Build__Bazel__Remote__Execution__V2__Platform__Property Prop;

static struct cfg_instance inst_with(char **keys, int n)
{
	struct cfg_instance ci = {0};
	ci.name = (char *)"";
	ci.platform_properties = keys;
	ci.n_platform_properties = n;
	return ci;
}

static char *canon(const struct cfg_instance *ci, const char *const *kv, size_t n, char **err)
{
	Platform p = BUILD__BAZEL__REMOTE__EXECUTION__V2__PLATFORM__INIT;
	Prop props[8], *pp[8];
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__platform__property__init(&props[i]);
		props[i].name = (char *)kv[2 * i];
		props[i].value = (char *)kv[2 * i + 1];
		pp[i] = &props[i];
	}
	p.n_properties = n;
	p.properties = pp;
	char *out = NULL;
	*err = NULL;
	if (sched_platform(&p, ci, &out, err) != 0)
		return NULL;
	return out;
}

START_TEST(test_platform_canonical)
{
	char *keys[] = {(char *)"pool", (char *)"label"};
	struct cfg_instance ci = inst_with(keys, 2);
	char *err;
	const char *a[] = {"pool", "big",   "OSFamily", "linux",    "label",
			   "b",	   "label", "a",	"OSFamily", "linux"};
	char *s = canon(&ci, a, 5, &err);
	ck_assert_ptr_nonnull(s);
	ck_assert_str_eq(s, "OSFamily=linux;label=a;label=b;pool=big");
	free(s);

	/* Separators inside names and values are escaped. */
	const char *b[] = {"pool", "a;b=c:d%"};
	s = canon(&ci, b, 1, &err);
	ck_assert_str_eq(s, "pool=a%3Bb%3Dc%3Ad%25");
	free(s);

	/* No properties: the empty platform. */
	s = canon(&ci, NULL, 0, &err);
	ck_assert_str_eq(s, "");
	free(s);
	char *out = NULL;
	ck_assert_int_eq(sched_platform(NULL, &ci, &out, &err), 0);
	ck_assert_str_eq(out, "");
	free(out);
}
END_TEST

START_TEST(test_platform_undeclared)
{
	struct cfg_instance ci = inst_with(NULL, 0);
	char *err;
	const char *a[] = {"ISA", "x86-64", "container-image", "docker://x"};
	char *s = canon(&ci, a, 2, &err);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(err);
	ck_assert_ptr_nonnull(strstr(err, "\"container-image\""));
	ck_assert_ptr_nonnull(strstr(err, "OSFamily, ISA"));
	free(err);
}
END_TEST

START_TEST(test_bot_props)
{
	char *keys[] = {(char *)"pool"};
	struct cfg_instance ci = inst_with(keys, 1);
	Google__Devtools__Remoteworkers__V1test2__Worker w =
		GOOGLE__DEVTOOLS__REMOTEWORKERS__V1TEST2__WORKER__INIT;
	Google__Devtools__Remoteworkers__V1test2__Device
		d0 = GOOGLE__DEVTOOLS__REMOTEWORKERS__V1TEST2__DEVICE__INIT,
		d1 = d0, *devs[] = {&d0, &d1};
	Google__Devtools__Remoteworkers__V1test2__Device__Property p[3], *pp0[2], *pp1[1];
	const char *kv[][2] = {{"OSFamily", "linux"}, {"secret", "x"}, {"ISA", "arm"}};
	for (int i = 0; i < 3; i++) {
		google__devtools__remoteworkers__v1test2__device__property__init(&p[i]);
		p[i].key = (char *)kv[i][0];
		p[i].value = (char *)kv[i][1];
	}
	pp0[0] = &p[0];
	pp0[1] = &p[1];
	pp1[0] = &p[2];
	d0.n_properties = 2;
	d0.properties = pp0;
	d1.n_properties = 1;
	d1.properties = pp1;
	Google__Devtools__Remoteworkers__V1test2__Worker__Property wp, *wpp[] = {&wp};
	google__devtools__remoteworkers__v1test2__worker__property__init(&wp);
	wp.key = (char *)"pool";
	wp.value = (char *)"big";
	w.n_devices = 2;
	w.devices = devs;
	w.n_properties = 1;
	w.properties = wpp;
	/* Only the first device counts; undeclared keys are dropped. */
	char *s = sched_bot_props(&w, &ci);
	ck_assert_str_eq(s, "OSFamily=linux;pool=big");
	free(s);
	s = sched_bot_props(NULL, &ci);
	ck_assert_str_eq(s, "");
	free(s);
}
END_TEST

START_TEST(test_match)
{
	ck_assert(sched_platform_match("", ""));
	ck_assert(sched_platform_match("", "OSFamily=linux"));
	ck_assert(sched_platform_match("OSFamily=linux", "ISA=x86;OSFamily=linux"));
	ck_assert(!sched_platform_match("OSFamily=linux", ""));
	ck_assert(!sched_platform_match("OSFamily=linux", "OSFamily=linuxx"));
	ck_assert(!sched_platform_match("OSFamily=lin", "OSFamily=linux"));
	ck_assert(sched_platform_match("label=a;label=b", "label=a;label=b;pool=x"));
	ck_assert(!sched_platform_match("label=a;label=b", "label=a;pool=x"));
}
END_TEST

START_TEST(test_stages_and_uuid)
{
	ck_assert_str_eq(sched_stage_name(SCHED_QUEUED), "QUEUED");
	ck_assert_str_eq(sched_stage_name(SCHED_COMPLETED), "COMPLETED");
	ck_assert_int_eq(sched_stage_parse("EXECUTING"), SCHED_EXECUTING);
	ck_assert_int_eq(sched_stage_parse("nope"), -1);
	char *a = sched_uuid(), *b = sched_uuid();
	ck_assert_uint_eq(strlen(a), 36);
	ck_assert_int_eq(a[14], '4');
	ck_assert(a[19] == '8' || a[19] == '9' || a[19] == 'a' || a[19] == 'b');
	ck_assert_str_ne(a, b);
	free(a);
	free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_platform_canonical);
	tcase_add_test(tc, test_platform_undeclared);
	tcase_add_test(tc, test_bot_props);
	tcase_add_test(tc, test_match);
	tcase_add_test(tc, test_stages_and_uuid);
	suite_add_tcase(s, tc);
	return check_run(s);
}
