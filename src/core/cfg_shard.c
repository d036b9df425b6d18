/*
 * cfg_shard.c - the keys of a remote or sharded CAS instance:
 * instances[].shards (a list of endpoints, each a mapping with its own key
 * table) and the rules that tie storage:, shards: and shard-self: together.
 * What the keys mean is in reactor.conf(5) and src/services/cas_remote.c.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/cfg_int.h"

#define FS(field)                                                                                  \
	.off = offsetof(struct cfg_shard, field), .size = sizeof(((struct cfg_shard *)0)->field)
static const struct key shard_keys[] = {
	{"name", K_STRING, FS(name), .check = cfg_check_nonempty, .required = true},
	{"address", K_STRING, FS(address), .check = cfg_check_nonempty, .required = true},
	{"tls", K_BOOL, FS(tls), .def = false},
	{"tls-ca", K_STRING, FS(tls_ca), .check = cfg_check_nonempty},
	{"tls-cert", K_STRING, FS(tls_cert), .check = cfg_check_nonempty},
	{"tls-key", K_STRING, FS(tls_key), .check = cfg_check_nonempty},
	{"tls-server-name", K_STRING, FS(tls_server_name), .check = cfg_check_nonempty},
	{"token-file", K_STRING, FS(token_file), .check = cfg_check_nonempty},
};
static const struct keytab shard_tab = {shard_keys, ARRAY_LEN(shard_keys)};

static int shard_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	const struct node *where[ARRAY_LEN(shard_keys)] = {0};
	if (n->kind != N_MAP)
		return fail(x, n, path, "expected a mapping like {name: a, address: HOST:PORT}");
	char *outer = xasprintf("%s.", path);
	int r = cfg_parse_map(x, &shard_tab, elem, n, "", outer, where);
	free(outer);
	if (r != 0)
		return r;
	for (size_t i = 0; i < ARRAY_LEN(shard_keys); i++) {
		if (shard_keys[i].required && !where[i])
			return fail(x, n, path, "%s: required", shard_keys[i].name);
	}
	cfg_apply_defaults(&shard_tab, elem, where);
	return 0;
}

static void shard_default(void *elem, const char *def)
{
	(void)elem, (void)def; /* no default element */
}

/* Shard names are the hashing keys: two equal names would own the same
 * digests. */
static int shards_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
			int n)
{
	const struct cfg_shard *s = elems;
	for (int i = 1; i < n; i++) {
		for (int j = 0; j < i; j++) {
			if (strcmp(s[i].name, s[j].name))
				continue;
			return fail(x, seq->kids[i], path,
				    "duplicate shard name \"%s\" (also %s[%d])", s[i].name, path,
				    j);
		}
	}
	return 0;
}

static bool shard_equal(const void *a, const void *b)
{
	return cfg_tab_equal(&shard_tab, a, b);
}

static void shard_free(void *elem)
{
	cfg_free_fields(&shard_tab, elem);
}

const struct list_ops cfg_shard_ops = {
	.elem_size = sizeof(struct cfg_shard),
	.parse = shard_parse,
	.set_default = shard_default,
	.check = shards_check,
	.equal = shard_equal,
	.free = shard_free,
};

int cfg_shards_check(struct ctx *x, struct cfg_instance *in, const struct node *n, const char *path)
{
	const struct node *at = cfg_node_get(n, "storage");
	if (!at)
		at = n;
	char *p = xasprintf("%s.storage", path);
	int r = 0;
	if (in->storage == CFG_STORAGE_REMOTE && in->n_shards != 1) {
		r = fail(x, at, p,
			 "storage: remote needs exactly one entry in shards: (the CAS to "
			 "forward to); got %d",
			 in->n_shards);
	} else if (in->storage == CFG_STORAGE_REMOTE && in->shard_self) {
		r = fail(x, at, p, "storage: remote has no shard-self (use storage: sharded)");
	} else if (in->storage == CFG_STORAGE_SHARDED && in->n_shards < 1) {
		r = fail(x, at, p, "storage: sharded needs at least one entry in shards:");
	} else if (in->storage != CFG_STORAGE_REMOTE && in->storage != CFG_STORAGE_SHARDED &&
		   (in->n_shards || in->shard_self || in->cache_size)) {
		r = fail(x, at, p,
			 "shards:, shard-self: and cache-size: need storage: remote or sharded");
	} else if (in->shard_self) {
		bool found = false;
		for (int i = 0; i < in->n_shards; i++)
			found |= !strcmp(in->shards[i].name, in->shard_self);
		if (!found) {
			const struct node *sn = cfg_node_get(n, "shard-self");
			free(p);
			p = xasprintf("%s.shard-self", path);
			r = fail(x, sn ? sn : n, p,
				 "\"%s\" is not the name of an entry in shards:", in->shard_self);
		}
	}
	free(p);
	return r;
}
