/* SPDX-License-Identifier: GPL-2.0 */
/* What bindgen reads to generate kmod/bindings_generated.rs. */
#include <net/genetlink.h>
#include <net/netlink.h>
#include "helpers.h"

/* Macros bindgen cannot evaluate, turned into constants it can. */
const u8 PRISM_GENL_MCAST_CAP_NET_ADMIN = GENL_MCAST_CAP_NET_ADMIN;
const size_t PRISM_NLMSG_GOODSIZE = NLMSG_GOODSIZE;
