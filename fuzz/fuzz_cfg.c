/*
 * fuzz_cfg.c - libFuzzer target for the config loader (src/core/cfg*.c):
 * YAML through libyaml, the key table, values (sizes, durations, addresses,
 * lists), cross-key checks and the master's builders.  The input is written
 * to a file in /dev/shm and read back with cfg_load (so NUL bytes and the
 * file path are covered as reactord sees them).  A load either fails with a
 * "FILE:..." message or gives a config that diffs cleanly against itself;
 * nothing may leak on either path (LeakSanitizer).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "core/cfg.h"
#include "core/log.h"
#include "core/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
static char path[64];
static struct cfg *defaults;

static void cleanup(void)
{
	unlink(path);
	cfg_free(defaults);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	snprintf(path, sizeof(path), "/dev/shm/reactord-fuzz-cfg.%ld.conf", (long)getpid());
	char *err = NULL;
	if (cfg_load_string("defaults", "", &defaults, &err) != 0) {
		fprintf(stderr, "fuzz_cfg: the empty config fails: %s\n", err);
		abort();
	}
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	CHECK(f != NULL);
	CHECK(fwrite(data, 1, size, f) == size);
	CHECK(fclose(f) == 0);

	struct cfg *c = NULL;
	char *err = NULL;
	if (cfg_load(path, &c, &err) != 0) {
		CHECK(c == NULL);
		CHECK(err != NULL);
		CHECK(strncmp(err, path, strlen(path)) == 0);
		free(err);
		return 0;
	}
	CHECK(c != NULL && err == NULL);
	CHECK(c->n_instances >= 1);
	char *d = cfg_diff_static(c, c);
	CHECK(d == NULL);
	free(d);
	free(cfg_diff_static(c, defaults));
	for (int i = 0; i < c->n_instances; i++)
		CHECK(cfg_instance_find(c, c->instances[i].name) != NULL);
	cfg_free(c);
	return 0;
}
