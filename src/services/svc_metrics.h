/*
 * svc_metrics.h - /metrics (Prometheus text format) on the http:
 * listener; see svc_metrics.c.  core/metrics holds the registry.
 */
#ifndef REACTOR_SVC_METRICS_H
#define REACTOR_SVC_METRICS_H

struct cfg;

/* Register the collectors and the /metrics route (after metrics_init;
 * before or after http_start).  cfg (its instances) must outlive the
 * registry: the boot config. */
void svc_metrics_init(const struct cfg *cfg);

/* Before http_stop: scrapes still waiting for Redis answer nobody. */
void svc_metrics_shutdown(void);

#endif
