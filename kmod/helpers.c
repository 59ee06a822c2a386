// SPDX-License-Identifier: GPL-2.0
/* Wrappers of static inline functions and macros; see helpers.h. */
#include "helpers.h"
#include <linux/uaccess.h>

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

void *prism_genlmsg_put_dump(struct sk_buff *skb, struct netlink_callback *cb, u8 cmd)
{
	return genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
			   genl_info_dump(cb)->family, NLM_F_MULTI, cmd);
}

void prism_genlmsg_cancel(struct sk_buff *skb, void *hdr)
{
	genlmsg_cancel(skb, hdr);
}

struct net *prism_dump_net(struct netlink_callback *cb)
{
	return sock_net(cb->skb->sk);
}

long *prism_dump_args(struct netlink_callback *cb)
{
	return cb->args;
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

/*
 * spin_lock_init() gives each of its call sites a lockdep class: called through one
 * wrapper, every lock would share it. The caller passes a class of its own (a static
 * key per lock), as the kernel's Rust helper does.
 */
void prism_spin_lock_init(spinlock_t *lock, const char *name,
			  struct lock_class_key *key)
{
#ifdef CONFIG_DEBUG_SPINLOCK
# if defined(CONFIG_PREEMPT_RT)
	__spin_lock_init(lock, name, key, false);
# else
	__raw_spin_lock_init(spinlock_check(lock), name, key, LD_WAIT_CONFIG);
# endif
#else
	spin_lock_init(lock);
#endif
}

void prism_spin_lock_bh(spinlock_t *lock)
{
	spin_lock_bh(lock);
}

void prism_spin_unlock_bh(spinlock_t *lock)
{
	spin_unlock_bh(lock);
}

unsigned long prism_jiffies(void)
{
	return jiffies;
}

unsigned long prism_msecs_to_jiffies(unsigned int ms)
{
	return msecs_to_jiffies(ms);
}

unsigned long prism_usecs_to_jiffies(unsigned int us)
{
	return usecs_to_jiffies(us);
}

u32 prism_tcp_rto_min_us(const struct sock *sk)
{
	return tcp_rto_min_us(sk);
}

const void *prism_skb_header_pointer(const struct sk_buff *skb, int offset, int len,
				     void *buffer)
{
	return skb_header_pointer(skb, offset, len, buffer);
}

int prism_skb_network_offset(const struct sk_buff *skb)
{
	return skb_network_offset(skb);
}

sockptr_t prism_kernel_sockptr(void *p)
{
	return KERNEL_SOCKPTR(p);
}

sockptr_t prism_user_sockptr(void __user *p)
{
	return USER_SOCKPTR(p);
}

/* copy_to_user() and clear_user() are inline on x86. */
unsigned long prism_copy_to_user(void __user *to, const void *from, unsigned long n)
{
	return copy_to_user(to, from, n);
}

unsigned long prism_clear_user(void __user *to, unsigned long n)
{
	return clear_user(to, n);
}

struct socket *prism_sk_socket(const struct sock *sk)
{
	return sk->sk_socket;
}

void prism_sock_set_flag_done(struct sock *sk)
{
	sock_set_flag(sk, SOCK_DONE);
}

int prism_tcp_mtu_probing(const struct net *net)
{
	return READ_ONCE(net->ipv4.sysctl_tcp_mtu_probing);
}

int prism_tcp_base_mss(const struct net *net)
{
	return READ_ONCE(net->ipv4.sysctl_tcp_base_mss);
}

bool prism_sock_flag_done(const struct sock *sk)
{
	return sock_flag(sk, SOCK_DONE);
}

void prism_inet_csk_enter_pingpong_mode(struct sock *sk)
{
	inet_csk_enter_pingpong_mode(sk);
}

struct sk_buff *prism_skb_peek_tail(struct sk_buff_head *list)
{
	return skb_peek_tail(list);
}

/* skb->cb as strparser's users (kTLS's rx_list among them) lay it out. */
struct sk_skb_cb *prism_sk_skb_cb(struct sk_buff *skb)
{
	return (struct sk_skb_cb *)skb->cb;
}

struct sk_buff *prism_alloc_skb(unsigned int len)
{
	return alloc_skb(len, GFP_KERNEL);
}

void prism_skb_queue_tail(struct sk_buff_head *list, struct sk_buff *skb)
{
	__skb_queue_tail(list, skb);
}

/* skb_shinfo() is a macro: lets an skb forget the list it borrowed (no reference). */
void prism_skb_forget_frag_list(struct sk_buff *skb)
{
	skb_shinfo(skb)->frag_list = NULL;
	skb->len = 0;
	skb->data_len = 0;
}

struct ipv6_pinfo *prism_inet6_sk(const struct sock *sk)
{
	return inet6_sk(sk);
}

const struct nlattr *prism_genl_request_attrs(const struct genl_info *info, int *len)
{
	*len = genlmsg_len(info->genlhdr);
	return genlmsg_data(info->genlhdr);
}

/* Release notifier (tracker.rs, events.rs). */
void prism_init_work(struct work_struct *work, work_func_t func)
{
	INIT_WORK(work, func);
}

bool prism_schedule_work(struct work_struct *work)
{
	return schedule_work(work);
}

void prism_tracepoint_synchronize_unregister(void)
{
	tracepoint_synchronize_unregister();
}

const char *prism_tracepoint_name(const struct tracepoint *tp)
{
	return tp->name;
}

struct net *prism_get_net(struct net *net)
{
	return get_net(net);
}

void prism_put_net(struct net *net)
{
	put_net(net);
}

u64 prism_net_cookie(const struct net *net)
{
	return net->net_cookie;
}

void *prism_net_generic(const struct net *net, unsigned int id)
{
	void *p;

	rcu_read_lock();
	p = net_generic(net, id);
	rcu_read_unlock();
	return p;
}

u64 prism_ktime_get_ns(void)
{
	return ktime_get_ns();
}

struct net *prism_sock_net(const struct sock *sk)
{
	return sock_net(sk);
}

/*
 * Size of the departed-tuple table. module_param() is a macro that Rust cannot expand
 * (the 6.12 `module!` macro has no parameters); the value is validated in departed.rs.
 */
static unsigned int departed_capacity = 65536;
module_param(departed_capacity, uint, 0444);
MODULE_PARM_DESC(departed_capacity,
		 "Departed tuples guarded against RST at most (1..1048576, default 65536)");

unsigned int prism_departed_capacity(void)
{
	return departed_capacity;
}

static unsigned int departed_netns_quota;
module_param(departed_netns_quota, uint, 0444);
MODULE_PARM_DESC(departed_netns_quota,
		 "Departed tuples one network namespace may hold at most (default: half of departed_capacity)");

unsigned int prism_departed_netns_quota(void)
{
	return departed_netns_quota;
}

/*
 * A failure point that no allocation stands for (a reply the caller's socket has no room
 * for). It counts in the calling task's fail-nth like every allocation, so the fault
 * tests reach it; silent, because they inject hundreds of failures.
 */
#ifdef CONFIG_FAULT_INJECTION
static struct fault_attr prism_fault = {
	.interval = 1,
	.times = ATOMIC_INIT(1),
	.require_end = ULONG_MAX,
	.stacktrace_depth = 32,
	.ratelimit_state = RATELIMIT_STATE_INIT_DISABLED,
	.verbose = 0,
};

bool prism_should_fail(void)
{
	return should_fail(&prism_fault, 1);
}
#else
bool prism_should_fail(void)
{
	return false;
}
#endif

/* The socket's TCP-MD5 keys: the field exists only with CONFIG_TCP_MD5SIG. The caller
 * holds the socket lock, under which keys are added and removed.
 */
bool prism_tcp_md5_keys(const struct sock *sk)
{
#ifdef CONFIG_TCP_MD5SIG
	const struct tcp_md5sig_info *md5 =
		rcu_dereference_protected(tcp_sk(sk)->md5sig_info, lockdep_sock_is_held(sk));

	return md5 && !hlist_empty(&md5->head);
#else
	return false;
#endif
}

/* The socket's TCP-AO keys (CONFIG_TCP_AO); socket lock held as above. */
bool prism_tcp_ao_keys(const struct sock *sk)
{
#ifdef CONFIG_TCP_AO
	const struct tcp_ao_info *ao =
		rcu_dereference_protected(tcp_sk(sk)->ao_info, lockdep_sock_is_held(sk));

	return ao && !hlist_empty(&ao->head);
#else
	return false;
#endif
}

u32 prism_sysctl_wmem_max(void)
{
	return READ_ONCE(sysctl_wmem_max);
}

u32 prism_sysctl_rmem_max(void)
{
	return READ_ONCE(sysctl_rmem_max);
}

int prism_tcp_wmem_max(const struct sock *sk)
{
	return READ_ONCE(sock_net(sk)->ipv4.sysctl_tcp_wmem[2]);
}

int prism_tcp_rmem_max(const struct sock *sk)
{
	return READ_ONCE(sock_net(sk)->ipv4.sysctl_tcp_rmem[2]);
}

u32 prism_tcp_clock_ts(bool usec_ts)
{
	return tcp_clock_ts(usec_ts);
}

bool prism_genl_has_listeners(const struct genl_family *family, struct net *net,
			      unsigned int group)
{
	return genl_has_listeners(family, net, group);
}

void prism_init_delayed_work(struct delayed_work *dwork, work_func_t func)
{
	INIT_DELAYED_WORK(dwork, func);
}

bool prism_schedule_delayed_work(struct delayed_work *dwork, unsigned long delay)
{
	return schedule_delayed_work(dwork, delay);
}

unsigned int prism_skb_len(const struct sk_buff *skb)
{
	return skb->len;
}

unsigned char *prism_skb_network_header(const struct sk_buff *skb)
{
	return skb_network_header(skb);
}

void prism_skb_reset_network_header(struct sk_buff *skb)
{
	skb_reset_network_header(skb);
}

int prism_skb_cow_head(struct sk_buff *skb, unsigned int headroom)
{
	return skb_cow_head(skb, headroom);
}

void prism_skb_set_protocol(struct sk_buff *skb, __be16 protocol)
{
	skb->protocol = protocol;
}

void prism_skb_clear_cb(struct sk_buff *skb)
{
	memset(skb->cb, 0, sizeof(skb->cb));
}

void prism_skb_orphan(struct sk_buff *skb)
{
	skb_orphan(skb);
}

void prism_skb_clear_tstamp(struct sk_buff *skb)
{
	skb_clear_tstamp(skb);
}

void prism_nf_reset_ct(struct sk_buff *skb)
{
	nf_reset_ct(skb);
}

void prism_skb_dst_drop(struct sk_buff *skb)
{
	skb_dst_drop(skb);
}

void prism_skb_dst_set(struct sk_buff *skb, struct rtable *rt)
{
	skb_dst_set(skb, &rt->dst);
}

struct rtable *prism_ip_route_output_key(struct net *net, struct flowi4 *fl4)
{
	return ip_route_output_key(net, fl4);
}

void prism_ip_rt_put(struct rtable *rt)
{
	ip_rt_put(rt);
}

unsigned char prism_rtable_type(const struct rtable *rt)
{
	return rt->rt_type;
}

unsigned short prism_netdev_type(const struct net_device *dev)
{
	return dev->type;
}

struct inet_hashinfo *prism_tcp_hashinfo(const struct net *net)
{
	return net->ipv4.tcp_death_row.hashinfo;
}

int prism_ip_decrease_ttl(struct iphdr *iph)
{
	return ip_decrease_ttl(iph);
}

void prism_ip_select_ident(struct net *net, struct sk_buff *skb)
{
	ip_select_ident(net, skb, NULL);
}
