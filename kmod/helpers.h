/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Thin wrappers of static inline functions and macros that Rust cannot call.
 * No logic lives here; see the Rust code for that.
 */
#ifndef PRISM_SOCK_HELPERS_H
#define PRISM_SOCK_HELPERS_H

#include <net/strparser.h>
#include <net/genetlink.h>
#include <net/tcp.h>
#include <net/ipv6.h>
#include <linux/sockptr.h>
#include <linux/tracepoint.h>
#include <linux/workqueue.h>
#include <net/netns/generic.h>
#include <net/ip.h>
#include <net/route.h>
#include <net/ip_tunnels.h>
#include <linux/fault-inject.h>

struct sk_buff *prism_genlmsg_new(size_t payload, gfp_t flags);
void prism_genlmsg_end(struct sk_buff *skb, void *hdr);
void *prism_genlmsg_put_dump(struct sk_buff *skb, struct netlink_callback *cb, u8 cmd);
void prism_genlmsg_cancel(struct sk_buff *skb, void *hdr);
struct net *prism_dump_net(struct netlink_callback *cb);
long *prism_dump_args(struct netlink_callback *cb);
void prism_nlmsg_free(struct sk_buff *skb);
int prism_genlmsg_reply(struct sk_buff *skb, struct genl_info *info);
int prism_genlmsg_multicast_netns(const struct genl_family *family, struct net *net,
				  struct sk_buff *skb, u32 portid, unsigned int group,
				  gfp_t flags);
struct net *prism_genl_info_net(const struct genl_info *info);
u32 prism_nla_get_u32(const struct nlattr *nla);
bool prism_should_fail(void);

void prism_sockfd_put(struct socket *sock);
void prism_lock_sock(struct sock *sk);
struct user_namespace *prism_sock_user_ns(const struct sock *sk);
struct tcp_skb_cb *prism_tcp_skb_cb(struct sk_buff *skb);
struct sk_buff *prism_skb_rb_first(struct rb_root *root);
struct sk_buff *prism_skb_rb_next(struct sk_buff *skb);
u32 prism_tcp_time_stamp_ts(const struct tcp_sock *tp);
bool prism_sock_flag_keepopen(const struct sock *sk);

void prism_spin_lock_init(spinlock_t *lock, const char *name,
			  struct lock_class_key *key);
void prism_spin_lock_bh(spinlock_t *lock);
void prism_spin_unlock_bh(spinlock_t *lock);
unsigned long prism_jiffies(void);
unsigned long prism_msecs_to_jiffies(unsigned int ms);
unsigned long prism_usecs_to_jiffies(unsigned int us);
u32 prism_tcp_rto_min_us(const struct sock *sk);
unsigned int prism_departed_capacity(void);
unsigned int prism_departed_netns_quota(void);
void prism_init_work(struct work_struct *work, work_func_t func);
bool prism_schedule_work(struct work_struct *work);
void prism_tracepoint_synchronize_unregister(void);
const char *prism_tracepoint_name(const struct tracepoint *tp);
struct net *prism_get_net(struct net *net);
void prism_put_net(struct net *net);
u64 prism_net_cookie(const struct net *net);
void *prism_net_generic(const struct net *net, unsigned int id);
u64 prism_ktime_get_ns(void);
struct net *prism_sock_net(const struct sock *sk);
const void *prism_skb_header_pointer(const struct sk_buff *skb, int offset, int len,
				     void *buffer);
int prism_skb_network_offset(const struct sk_buff *skb);
sockptr_t prism_kernel_sockptr(void *p);
sockptr_t prism_user_sockptr(void __user *p);
unsigned long prism_copy_to_user(void __user *to, const void *from, unsigned long n);
unsigned long prism_clear_user(void __user *to, unsigned long n);
struct socket *prism_sk_socket(const struct sock *sk);
void prism_sock_set_flag_done(struct sock *sk);
int prism_tcp_mtu_probing(const struct net *net);
int prism_tcp_base_mss(const struct net *net);
bool prism_sock_flag_done(const struct sock *sk);
void prism_inet_csk_enter_pingpong_mode(struct sock *sk);
struct sk_buff *prism_skb_peek_tail(struct sk_buff_head *list);
struct ipv6_pinfo *prism_inet6_sk(const struct sock *sk);
const struct nlattr *prism_genl_request_attrs(const struct genl_info *info, int *len);

u32 prism_tcp_clock_ts(bool usec_ts);
bool prism_tcp_md5_keys(const struct sock *sk);
u32 prism_sysctl_wmem_max(void);
u32 prism_sysctl_rmem_max(void);
int prism_tcp_wmem_max(const struct sock *sk);
int prism_tcp_rmem_max(const struct sock *sk);
bool prism_tcp_ao_keys(const struct sock *sk);
bool prism_genl_has_listeners(const struct genl_family *family, struct net *net,
			      unsigned int group);

void prism_init_delayed_work(struct delayed_work *dwork, work_func_t func);
bool prism_schedule_delayed_work(struct delayed_work *dwork, unsigned long delay);

/* Forwarding a departed flow's packets (forward.rs). */
unsigned int prism_skb_len(const struct sk_buff *skb);
unsigned char *prism_skb_network_header(const struct sk_buff *skb);
void prism_skb_reset_network_header(struct sk_buff *skb);
int prism_skb_cow_head(struct sk_buff *skb, unsigned int headroom);
void prism_skb_set_protocol(struct sk_buff *skb, __be16 protocol);
void prism_skb_clear_cb(struct sk_buff *skb);
void prism_skb_orphan(struct sk_buff *skb);
void prism_skb_clear_tstamp(struct sk_buff *skb);
void prism_nf_reset_ct(struct sk_buff *skb);
void prism_skb_dst_drop(struct sk_buff *skb);
void prism_skb_dst_set(struct sk_buff *skb, struct rtable *rt);
struct rtable *prism_ip_route_output_key(struct net *net, struct flowi4 *fl4);
void prism_ip_rt_put(struct rtable *rt);
unsigned char prism_rtable_type(const struct rtable *rt);
unsigned short prism_netdev_type(const struct net_device *dev);
struct inet_hashinfo *prism_tcp_hashinfo(const struct net *net);
int prism_ip_decrease_ttl(struct iphdr *iph);
void prism_ip_select_ident(struct net *net, struct sk_buff *skb);

/* kTLS state (ktls.rs). */
void prism_skb_forget_frag_list(struct sk_buff *skb);
struct sk_skb_cb *prism_sk_skb_cb(struct sk_buff *skb);
struct sk_buff *prism_alloc_skb(unsigned int len);
void prism_skb_queue_tail(struct sk_buff_head *list, struct sk_buff *skb);

#endif
