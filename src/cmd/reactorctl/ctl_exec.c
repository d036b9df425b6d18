/*
 * ctl_exec.c - reactorctl exec: run one command remotely.
 */
#include "cmd/reactorctl/ctl.h"

const struct ctl_cmd ctl_cmds_exec[] = {{0}};
