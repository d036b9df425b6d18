/*
 * cfg.h - reactord's configuration: the parsed form of reactor.conf (YAML).
 * cfg_load() builds a complete struct cfg or fails with a message naming
 * file:line:column and the key; nothing is half-applied.  The key table in
 * cfg.c is the single source of names, types, defaults, bounds and which
 * keys SIGHUP may change.
 */
#ifndef REACTOR_CFG_H
#define REACTOR_CFG_H

#include <stdbool.h>
#include <stdint.h>

enum cfg_listen_kind { CFG_LISTEN_TCP, CFG_LISTEN_UNIX };

/* listen[].tls.client-auth: whether a client certificate is asked for. */
enum cfg_client_auth {
	CFG_CLIENT_AUTH_NONE,	  /* not asked for */
	CFG_CLIENT_AUTH_OPTIONAL, /* asked for; verified when presented */
	CFG_CLIENT_AUTH_REQUIRE	  /* the handshake fails without a valid one */
};

/* listen[].tls: the files are read when the listener starts and again on
 * every SIGHUP (a new SSL context for new connections). */
struct cfg_tls {
	char *cert;	 /* PEM certificate chain, leaf first */
	char *key;	 /* PEM private key */
	char *client_ca; /* PEM CA bundle client certificates must chain to; NULL */
	int client_auth; /* enum cfg_client_auth; default none (needs client_ca otherwise) */
};

/* One listen: entry, written as "ADDRESS" or as a mapping with address:. */
struct cfg_listen {
	enum cfg_listen_kind kind;
	char *host; /* TCP: numeric IPv4/IPv6 or a host name, brackets stripped */
	int port;   /* TCP: 0..65535, 0 = ephemeral */
	char *path; /* UNIX: socket path */
	char *address;	    /* the address as written (mapping form; NULL for a string) */
	struct cfg_tls *tls; /* NULL: plaintext */
	bool insecure;	    /* plaintext beyond loopback allowed (reactord refuses it else) */
	char **services;    /* full gRPC service names served here; none = every service */
	int n_services;
};

/* The gRPC service a short name ("cas", "bots"...) or full name stands
 * for, or NULL when it names none. */
const char *cfg_service_name(const char *name);

enum cfg_storage { CFG_STORAGE_DISK, CFG_STORAGE_MEMORY, CFG_STORAGE_REMOTE, CFG_STORAGE_SHARDED };

/* instances[].shards[]: one CAS endpoint of a remote or sharded CAS
 * (src/services/cas_remote.c).  Its TLS and token settings are those of
 * the project's gRPC client (rpc/client.h). */
struct cfg_shard {
	char *name;    /* rendezvous-hashing key: every reactord must spell it the same */
	char *address; /* a client target: HOST:PORT, grpcs://HOST:PORT, unix:PATH */
	bool tls;      /* TLS for a HOST:PORT target, trusting the system's CAs */
	char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
	char *token_file; /* bearer token sent on every call */
};
enum cfg_sandbox { CFG_SANDBOX_BWRAP, CFG_SANDBOX_NONE };

struct cfg_instance {
	char *name;		  /* REAPI instance name; "" is valid (Bazel's default) */
	int storage;		  /* enum cfg_storage; default disk */
	int64_t storage_max_size; /* bytes; 0 = unbounded on disk, 1 GiB in memory */
	bool allow_updates;	  /* ActionCache.UpdateActionResult allowed; reloadable */
	bool verify_reads;	  /* disk: hash streamed reads too; default false */
	bool storage_fsync;	  /* disk: fsync each blob (a batch: once) before acking */
	/* disk: small blobs packed in segment files (domain/blob_pack.h) */
	int64_t small_blob_size; /* largest packed blob; 0 = off; default 64KiB */
	int64_t segment_size;	 /* segment files, default 64MiB */
	int compact_live_percent; /* compact a segment below this live share, 50 */
	int64_t max_batch_size;	  /* CAS batch request limit, default 4MiB-64KiB; clipped
				     to what max-recv-message-size can carry */

	/* Remote execution (Execution, Operations, Bots); read from the live
	 * config on every call, so SIGHUP changes them. */
	bool execution;			  /* serve Execute, Operations and Bots; default false */
	int64_t max_execution_timeout_us; /* Action.timeout limit and default, default 1h */
	int64_t no_worker_timeout_us;	  /* fail jobs no bot can run after this, default 10m */
	int max_attempts;		  /* bots a job may be lost on, default 5 */
	int64_t operation_retention_us;	  /* finished operations are kept this long, 10m */
	bool cancel_orphaned_jobs;	  /* cancel an operation whose last stream left */
	char **platform_properties;	  /* declared platform keys (plus OSFamily, ISA) */
	int n_platform_properties;

	/* storage: remote | sharded (cas_remote.c); not reloadable. */
	struct cfg_shard *shards; /* remote: exactly one; sharded: at least one */
	int n_shards;
	char *shard_self;   /* sharded: the shard this reactord serves from its own store */
	int64_t cache_size; /* bytes of read-through memory cache in front; 0 = none */
};

/* master: builders (reactor.conf's master.builders.NAME). */
enum cfg_prop_type { CFG_PROP_STRING, CFG_PROP_INT, CFG_PROP_BOOL, CFG_PROP_NUMBER };

struct cfg_builder_prop {
	char *name;
	int type;	 /* enum cfg_prop_type */
	bool required;	 /* no default: a build must give it */
	char *def_json;	 /* the default as a JSON value ("\"hi\"", "3", "true"); NULL when none */
};

struct cfg_step {
	char *name;
	char **argv; /* at least one; "${prop}" is not expanded: steps read build.json or env */
	int argc;
	char **env; /* "KEY=VALUE" */
	int n_env;
	int64_t timeout_us;  /* 0 = the executor's default */
	char **platform;     /* "KEY=VALUE" platform properties */
	int n_platform;
	char **outputs;      /* paths the step produces (relative to the workspace) */
	int n_outputs;
	bool cache;	     /* may be served from the action cache; default true */
};

struct cfg_builder {
	char *name;
	struct cfg_builder_prop *props;
	int n_props;
	struct cfg_step *steps; /* at least one */
	int n_steps;
};

struct cfg_master {
	char *name;	/* the leasee; default host name + ":" + first listener as
			   written ("myhost:127.0.0.1:50051"); NULL only when that
			   listener has port 0: name it from the bound address */
	char **buckets; /* at least one */
	int n_buckets;
	char *server;	/* Buckets endpoint; NULL = this reactord */
	char *executor; /* REAPI endpoint; NULL = this reactord */
	char *executor_instance; /* REAPI instance name, default "" */
	int max_lease_count;	     /* default 10; reloadable */
	int64_t poll_interval_us;    /* default 10s; reloadable */
	int64_t heartbeat_interval_us; /* default 60s; reloadable */
	int64_t lease_duration_us;   /* default 5m (> heartbeat with margin); reloadable */
	bool on_shutdown_reset;	     /* on-shutdown: reset (true) | abandon (false, default) */
	struct cfg_builder *builders; /* reloadable */
	int n_builders;
	/* How the master reaches server and executor: TLS when the endpoint
	 * says grpcs:// or any tls.* key is set (NULL = unset); a bearer
	 * token read from token_file at each connect. */
	char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
	char *token_file;
};

/* auth: (src/core/cfg_auth.c; the services' auth.c applies it).  Role
 * grants map an identity to roles; "*" stands for every identity that
 * presented valid credentials (never for anonymous). */
struct cfg_grant {
	char *identity;
	char **roles; /* instance roles (cas-read...) and/or bucket roles (read...) */
	int n_roles;
};

/* auth.instances.NAME / auth.buckets.NAME: grants on that one instance or
 * bucket ("*": on every one). */
struct cfg_scope {
	char *name;
	struct cfg_grant *grants;
	int n_grants;
};

struct cfg_auth {
	char *tokens_file;    /* "<sha256-hex> <identity> [role...]" lines; NULL = none */
	char *unix_identity;  /* identity of unix-socket callers without credentials */
	char **anonymous;     /* roles of callers without credentials; default none */
	int n_anonymous;
	bool require;	      /* credentials required (else UNAUTHENTICATED) */
	char **jwt_keys;      /* key files: PEM public keys (RS/ES) or HMAC secrets */
	int n_jwt_keys;
	char **jwt_algorithms; /* accepted "alg" values; default HS256, RS256, ES256 */
	int n_jwt_algorithms;
	char *jwt_issuer;     /* required "iss" when set */
	char *jwt_audience;   /* required in "aud" when set */
	char *jwt_identity_claim; /* default "sub" */
	char *jwt_roles_claim;	  /* default "roles" */
	int64_t jwt_clock_skew_us; /* exp/nbf leeway, default 30s */
	struct cfg_grant *roles;   /* on every instance and bucket */
	int n_roles;
	struct cfg_scope *instances;
	int n_instances;
	struct cfg_scope *buckets;
	int n_buckets;
};

struct cfg {
	char *file; /* path the config was read from (for messages) */

	struct cfg_listen *listen; /* at least one */
	int n_listen;
	/* http: the status page and /metrics (transport/http.c).  Entries
	 * like listen:'s (TCP or unix, address and insecure; never tls or
	 * services).  None by default.  Needs a restart. */
	struct cfg_listen *http;
	int n_http;
	/* status-url: the status page's base URL as people reach it; the
	 * master reports STATUS-URL/builds/ID.  NULL: http://ADDR of the
	 * first TCP http: listener.  Reloadable. */
	char *status_url;
	char *ready_file; /* NULL if unset */
	char *state_dir;  /* relative paths resolve against the cwd */

	/* log: */
	int log_level;	 /* enum log_level; reloadable */
	bool log_json;	 /* reloadable */
	bool access_log; /* reloadable */

	/* redis: */
	bool redis_embedded;  /* default true */
	char *redis_server;   /* embedded: redis-server binary, default "redis-server" */
	char *redis_address;  /* external: "host:port" or "/path/to.sock"; NULL when embedded */
	char *redis_password; /* NULL if none */
	int redis_db;	      /* 0..15 */
	char *redis_prefix;   /* starts every key and channel, default "reactor:" */
	int64_t redis_connect_timeout_us; /* default 2s */
	int64_t redis_reconnect_max_us;	  /* backoff cap, default 5s */
	int64_t redis_maxmemory;	  /* embedded: maxmemory (noeviction), default 1GiB */
	int64_t redis_command_timeout_us; /* a reply later than this breaks the link, 5s */
	int redis_max_pending;		  /* commands awaiting replies, default 100000 */

	/* http2: */
	uint32_t h2_max_concurrent_streams; /* default 1000; reloadable (new conns) */
	uint32_t h2_max_header_list_size;   /* default 16KiB */
	uint32_t h2_conn_window;	    /* default 16MiB */
	uint32_t h2_stream_window;	    /* default 4MiB */
	int64_t h2_idle_timeout_us;	    /* default 5m; 0 = never */
	int64_t h2_max_output_buffer;	    /* default 4MiB, backpressure limit */

	/* grpc: */
	int64_t grpc_max_recv_message_size; /* default 16MiB; reloadable */
	int64_t grpc_max_send_message_size; /* default 16MiB */
	int64_t grpc_max_call_duration_us;  /* default 1h; cap when client sets no deadline;
					       reloadable */

	/* limits: (all reloadable; connection limits apply to new connections) */
	int64_t limits_max_buffered_stream; /* default 0 = grpc.max-recv-message-size + 5 */
	int64_t limits_max_buffered_conn;   /* default 64MiB */
	int64_t limits_max_buffered_total;  /* default 512MiB */
	int limits_max_connections;	    /* default 4096 (capped by RLIMIT_NOFILE) */
	int limits_max_conns_per_addr;	    /* default 256; 0 = no limit */
	int64_t limits_half_close_timeout_us;	/* default 5m; 0 = none */
	int64_t limits_request_idle_timeout_us; /* default 5m; 0 = none */

	int64_t shutdown_grace_us; /* default 10s; reloadable */

	/* scheduler: (all reloadable) */
	int64_t sched_bot_keepalive_us; /* a bot must call again within this, default 60s */
	int64_t sched_long_poll_us;	/* longest idle UpdateBotSession wait, default 60s */
	int64_t sched_safety_net_us;	/* re-read watched jobs this often, default 5s */
	int64_t sched_keepalive_us;	/* Operation keep-alive on idle streams, default 30s */
	int64_t sched_sweep_us;		/* expiry/timeout/retention sweep, default 1s */
	int64_t sched_start_grace_us;	/* no fail-fast this long after start, default 60s */

	/* buckets: (all reloadable) */
	int64_t buckets_expiry_interval_us;	   /* lease expiry pass, default 10s */
	int64_t buckets_build_timeout_us;	   /* unfinished builds cancelled, default 2d */
	int64_t buckets_timeout_check_interval_us; /* build-timeout pass, default 1m */
	int64_t buckets_op_ttl_us;		   /* client_operation_id memory, default 60s */

	/* What clients grow in Redis (all reloadable). */
	int64_t ac_retention_us;      /* action-cache entry life, extended by hits, default 7d */
	int64_t buckets_retention_us; /* completed builds are removed after, default 30d */
	int buckets_max_tags;	      /* tags per build and per Search, default 64 */
	int sched_max_platforms;      /* distinct waiting platforms per instance, default 1000 */

	/* workers: local reactor-workers reactord starts and supervises
	 * (restart only) */
	int workers_local;	   /* how many, default 0 */
	char *workers_binary;	   /* NULL = reactor-worker next to reactord */
	char *workers_work_dir;	   /* NULL = a fresh TMPDIR/reactord-work.* per start */
	char **workers_properties; /* "KEY=VALUE" they advertise; default
				      OSFamily=linux, ISA=x86-64 */
	int n_workers_properties;
	int workers_sandbox;   /* enum cfg_sandbox; default bwrap */
	char *workers_bwrap;   /* NULL = bwrap in PATH */
	char *workers_run_as;  /* NULL = nobody when reactord runs as root */

	/* server streams and partial ByteStream uploads: (all reloadable) */
	int buckets_watch_max_ids;	    /* build ids one WatchBuilds watches, default 1000 */
	int buckets_watch_max_queued;	    /* states queued for a slow watcher, default 1000 */
	int uploads_max_open;		    /* partial uploads in total, default 1024 */
	int uploads_max_per_conn;	    /* partial uploads per connection, default 64 */
	int64_t uploads_abandon_timeout_us; /* idle partial upload dropped after, default 10m */

	struct cfg_instance *instances; /* at least one; default one named "" */
	int n_instances;

	struct cfg_master *master; /* NULL when reactor.conf has no master: */

	/* NULL when reactor.conf has no auth: section: every caller is
	 * anonymous with every role (the embedded default).  Reloadable. */
	struct cfg_auth *auth;
};

/* Parse and validate FILE.  On success returns 0 and *out (free with
 * cfg_free).  On failure returns -1 and *err holds a malloc'd message of the
 * form "FILE:LINE:COL: KEY: what is wrong" (caller frees). */
int cfg_load(const char *file, struct cfg **out, char **err);

/* Same, from a string; `name` is used as the file name in messages. */
int cfg_load_string(const char *name, const char *text, struct cfg **out, char **err);

void cfg_free(struct cfg *c);

/* Find an instance by name; NULL when it is not configured. */
const struct cfg_instance *cfg_instance_find(const struct cfg *c, const char *name);

/* Find a builder of the master by name; NULL when none (or no master). */
const struct cfg_builder *cfg_builder_find(const struct cfg_master *m, const char *name);

/* Describe which non-reloadable keys differ between a and b, as a malloc'd
 * comma-separated list of key paths, or NULL when only reloadable keys (or
 * nothing) changed. */
char *cfg_diff_static(const struct cfg *a, const struct cfg *b);

/* Call fn with the path of every key SIGHUP may change, in table order:
 * "log.level", "instances[].execution", "master.poll-interval"; a whole
 * reloadable section (auth) is one name.  reactord(8) lists them. */
void cfg_each_reloadable(void (*fn)(const char *name, void *arg), void *arg);

#endif
