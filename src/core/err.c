/*
 * err.c - names for the error codes of err.h (for logs).
 */
#include "core/err.h"

#include <errno.h>
#include <stdio.h>

const char *err_name(int err)
{
	switch (err) {
	case 0: return "0";
	case -ENOENT: return "ENOENT";
	case -EEXIST: return "EEXIST";
	case -EINVAL: return "EINVAL";
	case -EPERM: return "EPERM";
	case -ECANCELED: return "ECANCELED";
	case -ETIMEDOUT: return "ETIMEDOUT";
	case -ENOSPC: return "ENOSPC";
	case -ENOMEM: return "ENOMEM";
	case -EMFILE: return "EMFILE";
	case -EDQUOT: return "EDQUOT";
	case -ERANGE: return "ERANGE";
	case -ENOSYS: return "ENOSYS";
	case -EIO: return "EIO";
	case ERR_STORE_DOWN: return "ERR_STORE_DOWN";
	case ERR_STORE_FAILED: return "ERR_STORE_FAILED";
	case ERR_STORE_REPLY: return "ERR_STORE_REPLY";
	case ERR_PRECONDITION: return "ERR_PRECONDITION";
	case ERR_TOO_LARGE: return "ERR_TOO_LARGE";
	case ERR_ABORTED: return "ERR_ABORTED";
	case ERR_DATA_LOSS: return "ERR_DATA_LOSS";
	case ERR_STORE_FULL: return "ERR_STORE_FULL";
	case ERR_STORE_BUSY: return "ERR_STORE_BUSY";
	default: return err < 0 ? "error" : "positive";
	}
}
