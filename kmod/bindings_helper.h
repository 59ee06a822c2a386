/* SPDX-License-Identifier: GPL-2.0 */
/* What bindgen reads to generate kmod/bindings_generated.rs. */
#include <net/genetlink.h>
#include <net/netlink.h>
#include <linux/net.h>
#include <linux/file.h>
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/tcp.h>
#include <net/inet_common.h>
#include <net/ipv6.h>
#include <net/net_namespace.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <linux/random.h>
#include <linux/uio.h>
#include <linux/fcntl.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/sock_diag.h>
#include <linux/tracepoint.h>
#include <net/ip_tunnels.h>
#include <net/inet6_hashtables.h>
#include <linux/if_arp.h>
#include <net/tls.h>
#include <linux/mman.h>
#include "helpers.h"

/* Macros bindgen cannot evaluate, turned into constants it can. */
const u8 PRISM_GENL_MCAST_CAP_NET_ADMIN = GENL_MCAST_CAP_NET_ADMIN;
const u8 PRISM_TCPHDR_FIN = TCPHDR_FIN;
const u8 PRISM_TCPHDR_SYN = TCPHDR_SYN;
const int PRISM_CAP_NET_ADMIN = CAP_NET_ADMIN;
const u16 PRISM_SOCK_STREAM = SOCK_STREAM;
const unsigned int PRISM_HZ = HZ;
const unsigned int PRISM_TCP_RTO_MAX = TCP_RTO_MAX;
const u32 PRISM_TCP_INFINITE_SSTHRESH = TCP_INFINITE_SSTHRESH;
const u8 PRISM_TCPHDR_ACK = TCPHDR_ACK;
const u8 PRISM_TCPHDR_RST = TCPHDR_RST;
const u8 PRISM_TCP_SACK_SEEN = TCP_SACK_SEEN;
const unsigned int PRISM_TCPOLEN_TSTAMP_ALIGNED = TCPOLEN_TSTAMP_ALIGNED;
const unsigned int PRISM_ITER_SOURCE = ITER_SOURCE;
const unsigned int PRISM_MSG_DONTWAIT = MSG_DONTWAIT;
const unsigned int PRISM_O_CLOEXEC = O_CLOEXEC;
const unsigned int PRISM_O_NONBLOCK = O_NONBLOCK;
const u8 PRISM_SK_FORCE_REUSE = SK_FORCE_REUSE;
const unsigned int PRISM_TCP_TIMEWAIT_LEN_MS = TCP_TIMEWAIT_LEN * 1000 / HZ;
const unsigned int PRISM_SKB_GSO_IPXIP4 = SKB_GSO_IPXIP4;
const u16 PRISM_ETH_P_IP = ETH_P_IP;
const u16 PRISM_TLS_1_2_VERSION = TLS_1_2_VERSION;
const u16 PRISM_TLS_1_3_VERSION = TLS_1_3_VERSION;
const unsigned int PRISM_SOL_TLS = SOL_TLS;
const unsigned int PRISM_TLS_MAX_PAYLOAD_SIZE = TLS_MAX_PAYLOAD_SIZE;
const unsigned long PRISM_PROT_RW = PROT_READ | PROT_WRITE;
const unsigned long PRISM_MAP_PRIVATE_ANON = MAP_PRIVATE | MAP_ANONYMOUS;
