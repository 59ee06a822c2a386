/* SPDX-License-Identifier: GPL-2.0 */
/* What bindgen reads to generate kmod/bindings_generated.rs. */
#include <net/genetlink.h>
#include <net/netlink.h>
#include <linux/net.h>
#include <linux/file.h>
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/tcp.h>
#include "helpers.h"

/* Macros bindgen cannot evaluate, turned into constants it can. */
const u8 PRISM_GENL_MCAST_CAP_NET_ADMIN = GENL_MCAST_CAP_NET_ADMIN;
const size_t PRISM_NLMSG_GOODSIZE = NLMSG_GOODSIZE;
const u8 PRISM_TCPHDR_FIN = TCPHDR_FIN;
const u8 PRISM_TCPHDR_SYN = TCPHDR_SYN;
const int PRISM_CAP_NET_ADMIN = CAP_NET_ADMIN;
const u16 PRISM_SOCK_STREAM = SOCK_STREAM;
