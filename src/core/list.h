/*
 * list.h - the one intrusive doubly-linked list.  An owner embeds a
 * `struct list` in each element and keeps one `struct list` as the head;
 * the list never allocates.  The head is a sentinel (a circular list), so
 * insertion and removal need no special cases, and an element knows
 * whether it is on a list (list_linked) without a flag: list_del leaves it
 * pointing at itself.  Use container_of to get from a node to its element.
 */
#ifndef REACTOR_LIST_H
#define REACTOR_LIST_H

#include <stdbool.h>
#include <stddef.h>

#include "core/util.h" /* container_of */

struct list {
	struct list *prev, *next;
};

/* An empty head or an unlinked node; LIST_INIT for static initializers. */
#define LIST_INIT(name) {&(name), &(name)}
static inline void list_init(struct list *l)
{
	l->prev = l->next = l;
}

static inline bool list_empty(const struct list *head)
{
	return head->next == head;
}

/* True when n is on a list (initialized nodes that were never added or
 * were removed answer false). */
static inline bool list_linked(const struct list *n)
{
	return n->next != n;
}

static inline void list_insert_between(struct list *n, struct list *prev, struct list *next)
{
	n->prev = prev;
	n->next = next;
	prev->next = n;
	next->prev = n;
}

/* Append n at the tail / push it at the head. */
static inline void list_add_tail(struct list *head, struct list *n)
{
	list_insert_between(n, head->prev, head);
}

static inline void list_add_head(struct list *head, struct list *n)
{
	list_insert_between(n, head, head->next);
}

/* Unlink n (which must be linked or self-pointing) and leave it unlinked:
 * removing twice is harmless. */
static inline void list_del(struct list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	list_init(n);
}

/* Move n to the tail (LRU touch). */
static inline void list_move_tail(struct list *head, struct list *n)
{
	list_del(n);
	list_add_tail(head, n);
}

/* First / last node, or NULL when empty. */
static inline struct list *list_first(const struct list *head)
{
	return list_empty(head) ? NULL : head->next;
}

static inline struct list *list_last(const struct list *head)
{
	return list_empty(head) ? NULL : head->prev;
}

/* Iterate nodes; the _safe form allows list_del of the current node. */
#define list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define list_for_each_safe(pos, tmp, head)                                                         \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                           \
	     (pos) = (tmp), (tmp) = (pos)->next)

#endif
