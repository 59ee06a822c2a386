// SPDX-License-Identifier: GPL-2.0
/* Wrappers of static inline functions and macros; see helpers.h. */
#include "helpers.h"

struct sk_buff *prism_genlmsg_new(size_t payload, gfp_t flags)
{
	return genlmsg_new(payload, flags);
}

void prism_genlmsg_end(struct sk_buff *skb, void *hdr)
{
	genlmsg_end(skb, hdr);
}

void prism_nlmsg_free(struct sk_buff *skb)
{
	nlmsg_free(skb);
}

int prism_genlmsg_reply(struct sk_buff *skb, struct genl_info *info)
{
	return genlmsg_reply(skb, info);
}

int prism_genlmsg_multicast_netns(const struct genl_family *family, struct net *net,
				  struct sk_buff *skb, u32 portid, unsigned int group,
				  gfp_t flags)
{
	return genlmsg_multicast_netns(family, net, skb, portid, group, flags);
}

struct net *prism_genl_info_net(const struct genl_info *info)
{
	return genl_info_net(info);
}

u32 prism_nla_get_u32(const struct nlattr *nla)
{
	return nla_get_u32(nla);
}

void prism_sockfd_put(struct socket *sock)
{
	sockfd_put(sock);
}

void prism_lock_sock(struct sock *sk)
{
	lock_sock(sk);
}

struct user_namespace *prism_sock_user_ns(const struct sock *sk)
{
	return sock_net(sk)->user_ns;
}

struct tcp_skb_cb *prism_tcp_skb_cb(struct sk_buff *skb)
{
	return TCP_SKB_CB(skb);
}

struct sk_buff *prism_skb_rb_first(struct rb_root *root)
{
	return skb_rb_first(root);
}

struct sk_buff *prism_skb_rb_next(struct sk_buff *skb)
{
	return skb_rb_next(skb);
}

u32 prism_tcp_time_stamp_ts(const struct tcp_sock *tp)
{
	return tcp_time_stamp_ts(tp);
}

bool prism_sock_flag_keepopen(const struct sock *sk)
{
	return sock_flag(sk, SOCK_KEEPOPEN);
}
