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
