/*
 * master_action.c - the REAPI side of one master step (master_int.h): the
 * step's input root (build.json plus the workspace the earlier steps
 * produced, packed into Directory messages), its environment (properties
 * and change fields under the documented names), Command and Action, all
 * as blobs to upload.  No I/O: master_build.c uploads and executes them.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "domain/master_int.h"

/* ---- the step's input root and action ------------------------------------------------ */

PbDigest *mb_pbd(const struct digest *d)
{
	PbDigest *p = xmalloc(sizeof(*p));
	build__bazel__remote__execution__v2__digest__init(p);
	p->hash = (char *)d->hex;
	p->size_bytes = d->size;
	return p;
}

static void add_blob(struct mstep *st, uint8_t *data, size_t len, struct digest *out)
{
	digest_of(data, len, out);
	for (size_t i = 0; i < st->nblobs; i++) {
		if (digest_eq(&st->blobs[i].d, out)) {
			free(data);
			return;
		}
	}
	st->blobs = xrealloc(st->blobs, (st->nblobs + 1) * sizeof(*st->blobs));
	st->blobs[st->nblobs++] = (struct mblob){.d = *out, .data = data, .len = len};
}

uint8_t *mb_pack(const ProtobufCMessage *msg, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = xmalloc(*len ? *len : 1);
	protobuf_c_message_pack(msg, buf);
	return buf;
}

static int file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct mb_file *)a)->path, ((const struct mb_file *)b)->path);
}

/* The Directory of files[lo, hi), all under prefix (length plen), packed
 * into st; its digest in *out. */
static void pack_dir(struct mstep *st, struct mb_file *files, int lo, int hi, size_t plen,
		     struct digest *out)
{
	PbDirectory dir = REV2(DIRECTORY__INIT);
	PbFileNode **fn = xcalloc((size_t)(hi - lo) + 1, sizeof(*fn));
	PbDirectoryNode **dn = xcalloc((size_t)(hi - lo) + 1, sizeof(*dn));
	struct digest *dd = xcalloc((size_t)(hi - lo) + 1, sizeof(*dd));
	char **names = xcalloc((size_t)(hi - lo) + 1, sizeof(*names));
	size_t nf = 0, nd = 0;
	for (int i = lo; i < hi;) {
		const char *rest = files[i].path + plen;
		const char *slash = strchr(rest, '/');
		if (!slash) {
			PbFileNode *f = xmalloc(sizeof(*f));
			build__bazel__remote__execution__v2__file_node__init(f);
			f->name = (char *)rest;
			f->digest = mb_pbd(&files[i].d);
			f->is_executable = files[i].exec;
			fn[nf++] = f;
			i++;
			continue;
		}
		size_t nl = (size_t)(slash - rest);
		int j = i;
		while (j < hi && strncmp(files[j].path + plen, rest, nl + 1) == 0)
			j++;
		char *name = xstrndup(rest, nl);
		pack_dir(st, files, i, j, plen + nl + 1, &dd[nd]);
		PbDirectoryNode *d = xmalloc(sizeof(*d));
		build__bazel__remote__execution__v2__directory_node__init(d);
		d->name = name;
		names[nd] = name;
		d->digest = mb_pbd(&dd[nd]);
		dn[nd++] = d;
		i = j;
	}
	dir.files = fn;
	dir.n_files = nf;
	dir.directories = dn;
	dir.n_directories = nd;
	size_t len;
	uint8_t *buf = mb_pack(&dir.base, &len);
	add_blob(st, buf, len, out);
	for (size_t i = 0; i < nf; i++) {
		free(fn[i]->digest);
		free(fn[i]);
	}
	for (size_t i = 0; i < nd; i++) {
		free(dn[i]->digest);
		free(dn[i]);
		free(names[i]);
	}
	free(fn);
	free(dn);
	free(dd);
	free(names);
}

/* "PROP_" + name upper-cased, anything but [A-Za-z0-9] -> '_'. */
static char *env_name(const char *pfx, const char *name)
{
	char *s = xasprintf("%s%s", pfx, name);
	for (char *p = s + strlen(pfx); *p; p++)
		*p = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
	return s;
}

struct envv {
	char **names, **values;
	size_t n;
};

static void env_set(struct envv *e, char *name, char *value)
{
	for (size_t i = 0; i < e->n; i++) {
		if (strcmp(e->names[i], name) == 0) {
			free(e->names[i]);
			free(e->values[i]);
			e->names[i] = name;
			e->values[i] = value;
			return;
		}
	}
	e->names = xrealloc(e->names, (e->n + 1) * sizeof(char *));
	e->values = xrealloc(e->values, (e->n + 1) * sizeof(char *));
	e->names[e->n] = name;
	e->values[e->n++] = value;
}

/* A JSON value as an environment value: strings as they are, the rest
 * as JSON text. */
static char *env_value(const struct json *v)
{
	if (v->type == JSON_STRING)
		return xstrdup(v->str);
	struct sbuf sb = {0};
	mb_sb_json(&sb, v);
	return sb.s;
}

static void build_env(struct mbuild *b, const struct cfg_step *s, struct envv *e)
{
	if (!s->cache)
		env_set(e, xstrdup("BUILD_ID"), xasprintf("%" PRId64, b->id));
	env_set(e, xstrdup("BUILD_BUCKET"), xstrdup(b->bucket));
	env_set(e, xstrdup("BUILDER_NAME"), xstrdup(b->bld->name));
	char er[8];
	struct json *p = json_parse(b->props_json, strlen(b->props_json), er, sizeof(er));
	for (size_t i = 0; p && i < p->n; i++)
		env_set(e, env_name("PROP_", p->keys[i]), env_value(p->items[i]));
	json_free(p);
	/* The first change's fields: CHANGE_ID, CHANGE_REVISION, ...,
	 * CHANGE_AUTHOR_EMAIL. */
	p = json_parse(b->params_json, strlen(b->params_json), er, sizeof(er));
	const struct json *ch = p ? json_get(p, "changes") : NULL;
	if (ch && ch->type == JSON_ARRAY && ch->n > 0 && ch->items[0]->type == JSON_OBJECT) {
		const struct json *c = ch->items[0];
		for (size_t i = 0; i < c->n; i++) {
			const struct json *v = c->items[i];
			if (v->type == JSON_OBJECT) {
				for (size_t k = 0; k < v->n; k++) {
					if (v->items[k]->type == JSON_OBJECT ||
					    v->items[k]->type == JSON_ARRAY)
						continue;
					char *pre = env_name("CHANGE_", c->keys[i]);
					char *pre2 = xasprintf("%s_", pre);
					env_set(e, env_name(pre2, v->keys[k]),
						env_value(v->items[k]));
					free(pre);
					free(pre2);
				}
			} else if (v->type != JSON_ARRAY) {
				env_set(e, env_name("CHANGE_", c->keys[i]), env_value(v));
			}
		}
	}
	json_free(p);
	for (int i = 0; i < s->n_env; i++) {
		const char *eq = strchr(s->env[i], '=');
		if (!eq)
			continue;
		env_set(e, xstrndup(s->env[i], (size_t)(eq - s->env[i])), xstrdup(eq + 1));
	}
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Command and Action of step b->step into st; the action digest in
 * b->action_d. */
void mb_make_action(struct mbuild *b, struct mstep *st)
{
	const struct cfg_step *s = &b->bld->steps[b->step];
	/* Input root: the workspace plus build.json. */
	int n = b->nfiles + 1;
	struct mb_file *files = xcalloc((size_t)n, sizeof(*files));
	int k = 0;
	for (int i = 0; i < b->nfiles; i++)
		if (strcmp(b->files[i].path, "build.json") != 0)
			files[k++] = b->files[i];
	const char *bj = s->cache ? b->build_json : b->build_json_id;
	struct digest bjd;
	add_blob(st, (uint8_t *)xstrdup(bj), strlen(bj), &bjd);
	files[k++] = (struct mb_file){.path = "build.json", .d = bjd};
	qsort(files, (size_t)k, sizeof(*files), file_cmp);
	struct digest root;
	pack_dir(st, files, 0, k, 0, &root);
	free(files);

	PbCommand cmd = REV2(COMMAND__INIT);
	cmd.arguments = s->argv;
	cmd.n_arguments = (size_t)s->argc;
	struct envv e = {0};
	build_env(b, s, &e);
	/* Sorted by name, as REAPI wants. */
	size_t *ord = xcalloc(e.n + 1, sizeof(*ord));
	for (size_t i = 0; i < e.n; i++)
		ord[i] = i;
	for (size_t i = 1; i < e.n; i++)
		for (size_t j = i; j > 0 && strcmp(e.names[ord[j - 1]], e.names[ord[j]]) > 0; j--) {
			size_t t = ord[j];
			ord[j] = ord[j - 1];
			ord[j - 1] = t;
		}
	Build__Bazel__Remote__Execution__V2__Command__EnvironmentVariable *ev =
		xcalloc(e.n + 1, sizeof(*ev));
	Build__Bazel__Remote__Execution__V2__Command__EnvironmentVariable **evp =
		xcalloc(e.n + 1, sizeof(*evp));
	for (size_t i = 0; i < e.n; i++) {
		build__bazel__remote__execution__v2__command__environment_variable__init(&ev[i]);
		ev[i].name = e.names[ord[i]];
		ev[i].value = e.values[ord[i]];
		evp[i] = &ev[i];
	}
	cmd.environment_variables = evp;
	cmd.n_environment_variables = e.n;
	char **outs = xcalloc((size_t)s->n_outputs + 1, sizeof(*outs));
	memcpy(outs, s->outputs, (size_t)s->n_outputs * sizeof(*outs));
	qsort(outs, (size_t)s->n_outputs, sizeof(*outs), str_cmp);
	cmd.output_paths = outs;
	cmd.n_output_paths = (size_t)s->n_outputs;
	size_t len;
	uint8_t *buf = mb_pack(&cmd.base, &len);
	struct digest cmdd;
	add_blob(st, buf, len, &cmdd);
	free(outs);
	free(ev);
	free(evp);
	free(ord);
	for (size_t i = 0; i < e.n; i++) {
		free(e.names[i]);
		free(e.values[i]);
	}
	free(e.names);
	free(e.values);

	PbAction act = REV2(ACTION__INIT);
	act.command_digest = mb_pbd(&cmdd);
	act.input_root_digest = mb_pbd(&root);
	act.do_not_cache = !s->cache;
	Google__Protobuf__Duration to = GOOGLE__PROTOBUF__DURATION__INIT;
	if (s->timeout_us > 0) {
		to.seconds = s->timeout_us / 1000000;
		to.nanos = (int32_t)(s->timeout_us % 1000000) * 1000;
		act.timeout = &to;
	}
	PbPlatform plat = REV2(PLATFORM__INIT);
	PbPlatformProperty *pp = xcalloc((size_t)s->n_platform + 1, sizeof(*pp));
	PbPlatformProperty **ppp = xcalloc((size_t)s->n_platform + 1, sizeof(*ppp));
	char **pl = xcalloc((size_t)s->n_platform + 1, sizeof(*pl));
	memcpy(pl, s->platform, (size_t)s->n_platform * sizeof(*pl));
	qsort(pl, (size_t)s->n_platform, sizeof(*pl), str_cmp);
	size_t np = 0;
	for (int i = 0; i < s->n_platform; i++) {
		char *eq = strchr(pl[i], '=');
		if (!eq)
			continue;
		build__bazel__remote__execution__v2__platform__property__init(&pp[np]);
		pp[np].name = xstrndup(pl[i], (size_t)(eq - pl[i]));
		pp[np].value = eq + 1;
		ppp[np] = &pp[np];
		np++;
	}
	if (np) {
		plat.properties = ppp;
		plat.n_properties = np;
		act.platform = &plat;
	}
	buf = mb_pack(&act.base, &len);
	add_blob(st, buf, len, &b->action_d);
	for (size_t i = 0; i < np; i++)
		free(pp[i].name);
	free(pp);
	free(ppp);
	free(pl);
	free(act.command_digest);
	free(act.input_root_digest);
}

void mb_step_free(struct mstep *st)
{
	for (size_t i = 0; i < st->nblobs; i++)
		free(st->blobs[i].data);
	free(st->blobs);
	free(st);
}
