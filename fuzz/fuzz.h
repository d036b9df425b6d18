/*
 * fuzz.h - what every libFuzzer target here shares: the entry point's
 * prototype and CHECK, an invariant that aborts (so libFuzzer keeps the
 * input) with the file, line and condition that failed.
 */
#ifndef REACTOR_FUZZ_H
#define REACTOR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
