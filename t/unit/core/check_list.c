/*
 * check_list.c - the one intrusive list (core/list.h): order of adds at
 * both ends, removal (twice is harmless), list_linked, move to the tail,
 * first/last, and deleting while iterating with list_for_each_safe.
 */
#include <check.h>
#include <stdlib.h>

#include "core/list.h"
#include "check_run.h"

struct item {
	int v;
	struct list link;
};

/* The values on the list, head to tail, into out; their count. */
static int values(const struct list *head, int *out, int max)
{
	int n = 0;
	struct list *p;
	list_for_each(p, head)
	{
		ck_assert_int_lt(n, max);
		out[n++] = container_of(p, struct item, link)->v;
	}
	return n;
}

START_TEST(test_add_order_and_ends)
{
	struct list head = LIST_INIT(head);
	struct item it[4] = {{.v = 0}, {.v = 1}, {.v = 2}, {.v = 3}};
	for (int i = 0; i < 4; i++)
		list_init(&it[i].link);
	ck_assert(list_empty(&head));
	ck_assert_ptr_null(list_first(&head));
	ck_assert_ptr_null(list_last(&head));
	ck_assert(!list_linked(&it[0].link));
	list_add_tail(&head, &it[1].link);
	list_add_tail(&head, &it[2].link);
	list_add_head(&head, &it[0].link);
	list_add_tail(&head, &it[3].link);
	int v[8];
	ck_assert_int_eq(values(&head, v, 8), 4);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(v[i], i);
	ck_assert_ptr_eq(list_first(&head), &it[0].link);
	ck_assert_ptr_eq(list_last(&head), &it[3].link);
	ck_assert(list_linked(&it[2].link));
	ck_assert(!list_empty(&head));
}
END_TEST

START_TEST(test_del_and_move)
{
	struct list head;
	list_init(&head);
	struct item it[3] = {{.v = 0}, {.v = 1}, {.v = 2}};
	for (int i = 0; i < 3; i++)
		list_add_tail(&head, &it[i].link);
	list_del(&it[1].link);
	ck_assert(!list_linked(&it[1].link));
	list_del(&it[1].link); /* twice: harmless */
	int v[8];
	ck_assert_int_eq(values(&head, v, 8), 2);
	ck_assert_int_eq(v[0], 0);
	ck_assert_int_eq(v[1], 2);
	list_move_tail(&head, &it[0].link);
	ck_assert_int_eq(values(&head, v, 8), 2);
	ck_assert_int_eq(v[0], 2);
	ck_assert_int_eq(v[1], 0);
	list_del(&it[0].link);
	list_del(&it[2].link);
	ck_assert(list_empty(&head));
	ck_assert_ptr_null(list_first(&head));
}
END_TEST

START_TEST(test_delete_while_iterating)
{
	struct list head;
	list_init(&head);
	enum { K = 100 };
	struct item *it = calloc(K, sizeof(*it));
	for (int i = 0; i < K; i++) {
		it[i].v = i;
		list_add_tail(&head, &it[i].link);
	}
	struct list *p, *tmp;
	list_for_each_safe(p, tmp, &head)
	{
		struct item *x = container_of(p, struct item, link);
		if (x->v % 2)
			list_del(p);
	}
	int v[K];
	ck_assert_int_eq(values(&head, v, K), K / 2);
	for (int i = 0; i < K / 2; i++)
		ck_assert_int_eq(v[i], 2 * i);
	list_for_each_safe(p, tmp, &head) list_del(p);
	ck_assert(list_empty(&head));
	for (int i = 0; i < K; i++)
		ck_assert(!list_linked(&it[i].link));
	free(it);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("list");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_add_order_and_ends);
	tcase_add_test(tc, test_del_and_move);
	tcase_add_test(tc, test_delete_while_iterating);
	suite_add_tcase(s, tc);
	return check_run(s);
}
