/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Thin wrappers of static inline functions and macros that Rust cannot call.
 * No logic lives here; see the Rust code for that.
 */
#ifndef PRISM_SOCK_HELPERS_H
#define PRISM_SOCK_HELPERS_H

#include <net/genetlink.h>
#include <net/tcp.h>

struct sk_buff *prism_genlmsg_new(size_t payload, gfp_t flags);
void prism_genlmsg_end(struct sk_buff *skb, void *hdr);
void prism_nlmsg_free(struct sk_buff *skb);
int prism_genlmsg_reply(struct sk_buff *skb, struct genl_info *info);
int prism_genlmsg_multicast_netns(const struct genl_family *family, struct net *net,
				  struct sk_buff *skb, u32 portid, unsigned int group,
				  gfp_t flags);
struct net *prism_genl_info_net(const struct genl_info *info);
u32 prism_nla_get_u32(const struct nlattr *nla);

void prism_sockfd_put(struct socket *sock);
void prism_lock_sock(struct sock *sk);
struct user_namespace *prism_sock_user_ns(const struct sock *sk);
struct tcp_skb_cb *prism_tcp_skb_cb(struct sk_buff *skb);
struct sk_buff *prism_skb_rb_first(struct rb_root *root);
struct sk_buff *prism_skb_rb_next(struct sk_buff *skb);
u32 prism_tcp_time_stamp_ts(const struct tcp_sock *tp);
bool prism_sock_flag_keepopen(const struct sock *sk);

#endif
