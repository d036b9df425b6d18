/*
 * ctl_build.c - reactorctl's build commands (owned by the ctlops helper;
 * this file starts empty).
 */
#include "cmd/reactorctl/ctl.h"

const struct ctl_cmd ctl_cmds_build[] = {{0}};
