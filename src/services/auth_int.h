/*
 * auth_int.h - what auth.c (identities per call, role checks) and
 * auth_cred.c (the tokens file and JWT verification) share.
 */
#ifndef REACTOR_AUTH_INT_H
#define REACTOR_AUTH_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/map.h"
#include "core/util.h"

struct cfg_auth;

/* Role sets: bit r of inst is enum auth_role r, bit r of bucket is enum
 * auth_bucket_role r. */
struct auth_roles {
	unsigned inst, bucket;
};

/* Add role `name` (an instance or bucket role) to *r; false when the name
 * is not a role. */
bool auth_roles_add(struct auth_roles *r, const char *name);

/* One line of the tokens file. */
struct auth_token {
	uint8_t hash[32]; /* SHA-256 of the token */
	char *identity;
	struct auth_roles roles;
};

struct auth_key {
	int family; /* 'H' (HMAC secret), 'R' (RSA public key), 'E' (EC public key) */
	unsigned char *data;
	size_t len;
	char *file; /* for messages */
};

/* A JWT that verified: its claims, so the next call with the same token
 * (Bazel sends one per call) costs a SHA-256, not a signature check. */
struct auth_jwt_seen {
	struct map_node node;
	struct auth_jwt_seen *next_all;
	uint8_t hash[32]; /* SHA-256 of the whole token */
	char *identity;
	struct auth_roles roles;
	int64_t exp, nbf; /* nbf: INT64_MIN when absent */
};

/* The credential sources of one config generation. */
struct auth_creds {
	struct auth_token *tokens;
	size_t n_tokens;
	bool have_tokens; /* tokens-file configured (even if empty) */
	struct auth_key *keys;
	size_t n_keys;
	struct map jwt_seen; /* struct auth_jwt_seen, at most AUTH_JWT_CACHE */
	struct auth_jwt_seen *jwt_all;
};
#define AUTH_JWT_CACHE 4096

/* Load the tokens file and JWT keys the config names.  0, or -1 with
 * *err (malloc'd, naming the file and line; never a secret). */
int auth_creds_load(const struct cfg_auth *a, struct auth_creds *out, char **err) WARN_UNUSED;
void auth_creds_free(struct auth_creds *cr);

/* A bearer token's identity and roles.  0 with *identity (malloc'd) and
 * *roles; -1 with *why (malloc'd: what was expected, never the token). */
int auth_check_token(const struct auth_creds *cr, const char *token, char **identity,
		     struct auth_roles *roles, char **why) WARN_UNUSED;
int auth_check_jwt(const struct cfg_auth *a, struct auth_creds *cr, const char *token,
		   int64_t now_s, char **identity, struct auth_roles *roles,
		   char **why) WARN_UNUSED;
/* Three non-empty base64url parts separated by dots. */
bool auth_looks_like_jwt(const char *token);

#endif
