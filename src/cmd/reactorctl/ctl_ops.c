/*
 * ctl_ops.c - reactorctl's op, ac and bot commands (owned by the ctlops
 * helper; this file starts empty).
 */
#include "cmd/reactorctl/ctl.h"

const struct ctl_cmd ctl_cmds_ops[] = {{0}};
