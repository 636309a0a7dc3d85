// Socket-level load balancing for global services (cgroup sock_addr hooks). Deliberately a plain lookup:
// all policy (affinity, readiness, failover) is computed in user space by the node agent, which writes
// only the active backends here. A service has a master entry (slot 0) holding the backend count and
// entries for slots 1..count holding backend IDs; the agent writes new slots first and switches the count
// last, so a connect never sees a half-written service.
//
// Backend health (skein_health, per backend ip:port and protocol) is counted here and judged in user space
// (datapath/agent/outliers.ts): for TCP, a sockops program follows the connects this LB rewrote (found by
// socket cookie in skein_revnat) and counts established connects as successes, SYN retransmission timeouts,
// connects that die in SYN_SENT (refused, reset, given up; those ended before any retransmission also as
// refused: nothing listens, which the agent takes as proof) and a first retransmission timeout of a connection
// the backend never sent a byte on as failures; for UDP, sendmsg4 counts
// datagrams sent to a backend and recvmsg4 datagrams received from it. The agent may shorten the SYN RTO
// of rewritten connects (skein_config), so a silent backend shows in a few hundred ms instead of 1 s.
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct svc_key {
	__u32 addr;   /* network order */
	__u16 port;   /* network order */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
	__u16 slot;   /* 0: master */
	__u16 pad2;
};

struct svc_value {
	__u32 count;      /* master: number of active slots */
	__u32 backend_id; /* slots: the backend */
};

struct backend {
	__u32 addr;  /* network order */
	__u16 port;  /* network order */
	__u16 pad;
};

struct revnat {
	__u32 svc_addr;
	__u16 svc_port;
	__u16 pad;
	__u32 backend_addr;
	__u16 backend_port;
	__u16 pad2;
};

struct health_key {
	__u32 addr;  /* network order */
	__u16 port;  /* network order */
	__u8 proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

/* All times bpf_ktime_get_ns (CLOCK_MONOTONIC). Counters only grow, except the two "since" counts. */
struct health {
	__u64 successes;          /* TCP: connects established; UDP: datagrams received from the backend */
	__u64 failures;           /* TCP: SYN timeouts and connects that ended in SYN_SENT; UDP: 0 */
	__u64 consecutive;        /* TCP: failures since the last success */
	__u64 last_success_ns;
	__u64 last_failure_ns;
	__u64 sent;               /* UDP: datagrams sent to the backend */
	__u64 unanswered;         /* UDP: datagrams sent since the last one received */
	__u64 first_unanswered_ns; /* UDP: when the first of those was sent */
	__u64 last_sent_ns;
	__u64 refused;            /* TCP: connects ended in SYN_SENT before any retransmission (RST: nothing listens) */
	__u64 last_refused_ns;
};

/* A rewritten TCP connection the backend has not sent a byte on yet (skein_pending). */
struct pending {
	__u32 addr;     /* the backend, network order */
	__u16 port;     /* network order */
	__u16 pad;
	__u64 sent_ns;  /* when our first data left for it (skein_egress); 0: nothing sent yet */
};

struct config {
	__u32 syn_rto_jiffies; /* initial SYN RTO of rewritten connects; 0: the kernel's (1 s) */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} skein_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, __u32);
	__type(value, struct backend);
} skein_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64); /* socket cookie */
	__type(value, struct revnat);
} skein_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct health_key);
	__type(value, struct health);
} skein_health SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} skein_config SEC(".maps");

/* Established connections the backend has not answered yet, by socket cookie: made at ACTIVE_ESTABLISHED,
 * stamped when our first data leaves (skein_egress), removed by skein_ingress at the backend's first byte and
 * by sockops when the connection leaves ESTABLISHED. The agent reads it for stalls: our request went out, yet
 * nothing came back for a while — a fault that landed after the connect, whether the backend's kernel
 * acknowledged the request (no retransmission ever tells) or not (its first retransmission timeout came
 * ~410 ms after the connect: the backend-health e2e). Stamped at the send, not at the acknowledgement, so
 * both show at the same pace. An LRU: never refuses a connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct pending);
} skein_pending SEC(".maps");

/* Entries of skein_pending stamped sent and not removed yet: the agent reads skein_pending only while this is
 * above 0 (idle connections nobody sent on stay in the map and need no look). An entry the LRU evicts is not
 * subtracted: the count can only stay too high, which costs a needless read, never a missed stall. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} skein_pending_sent SEC(".maps");

/* Removes a connection's skein_pending entry; one stamped sent leaves skein_pending_sent. */
static __always_inline void pending_done(__u64 *cookie)
{
	struct pending *p = bpf_map_lookup_elem(&skein_pending, cookie);
	if (!p)
		return;
	__u64 sent = p->sent_ns;
	if (bpf_map_delete_elem(&skein_pending, cookie) != 0 || sent == 0)
		return;
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&skein_pending_sent, &zero);
	if (n && *n > 0)
		__sync_fetch_and_add(n, -1);
}

/* Whether a TCP/IPv4 packet (cgroup_skb: data starts at the IP header) carries payload. */
static __always_inline int tcp_payload(struct __sk_buff *skb)
{
	__u8 vihl, doff;
	if (bpf_skb_load_bytes(skb, 0, &vihl, 1) < 0)
		return 0;
	__u32 ihl = (vihl & 0x0f) * 4;
	if (bpf_skb_load_bytes(skb, ihl + 12, &doff, 1) < 0)
		return 0;
	return skb->len > ihl + (doff >> 4) * 4;
}

/* TCP failures counted so far, all backends: one value the agent can read every few ms to learn that
 * skein_health changed (reading the whole map that often would not scale). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} skein_failure_seq SEC(".maps");

static __always_inline int proto_of(struct bpf_sock_addr *ctx)
{
	return ctx->type == 1 /* SOCK_STREAM */ ? IPPROTO_TCP : IPPROTO_UDP;
}

/* The backend's health entry, made on first use (the agent removes those of backends it no longer programs). */
static __always_inline struct health *health_of(__u32 addr, __u16 port, __u8 proto)
{
	struct health_key hk = { .addr = addr, .port = port, .proto = proto };
	struct health *h = bpf_map_lookup_elem(&skein_health, &hk);
	if (h)
		return h;
	struct health zero = {};
	bpf_map_update_elem(&skein_health, &hk, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&skein_health, &hk);
}

/* Rewrites ctx to a backend if its destination is a service with active backends; a datagram (`datagram`:
 * sendmsg4) is counted as sent to it. */
static __always_inline void translate(struct bpf_sock_addr *ctx, int datagram)
{
	struct svc_key key = { .addr = ctx->user_ip4, .port = (__u16)ctx->user_port, .proto = proto_of(ctx) };
	struct svc_value *master = bpf_map_lookup_elem(&skein_services, &key);
	if (!master || master->count == 0)
		return;
	key.slot = (bpf_get_prandom_u32() % master->count) + 1;
	struct svc_value *slot = bpf_map_lookup_elem(&skein_services, &key);
	if (!slot)
		return;
	struct backend *be = bpf_map_lookup_elem(&skein_backends, &slot->backend_id);
	if (!be)
		return;
	struct revnat rn = { .svc_addr = ctx->user_ip4, .svc_port = (__u16)ctx->user_port, .backend_addr = be->addr, .backend_port = be->port };
	__u64 cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&skein_revnat, &cookie, &rn, BPF_ANY);
	ctx->user_ip4 = be->addr;
	ctx->user_port = be->port;
	struct health *h = health_of(be->addr, be->port, key.proto);
	if (h && datagram) {
		__u64 now = bpf_ktime_get_ns();
		if (h->unanswered == 0)
			h->first_unanswered_ns = now;
		__sync_fetch_and_add(&h->unanswered, 1);
		__sync_fetch_and_add(&h->sent, 1);
		h->last_sent_ns = now;
	}
}

/* A datagram from a backend datagrams were sent to: it answers. Only existing entries count, so a peer the
 * LB never sent to makes none. */
static __always_inline void received(struct bpf_sock_addr *ctx)
{
	struct health_key hk = { .addr = ctx->user_ip4, .port = (__u16)ctx->user_port, .proto = IPPROTO_UDP };
	struct health *h = bpf_map_lookup_elem(&skein_health, &hk);
	if (!h)
		return;
	__sync_fetch_and_add(&h->successes, 1);
	h->last_success_ns = bpf_ktime_get_ns();
	h->unanswered = 0;
}

/* Replies and getpeername show the service address the application asked for. */
static __always_inline void reverse(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct revnat *rn = bpf_map_lookup_elem(&skein_revnat, &cookie);
	if (!rn || rn->backend_addr != ctx->user_ip4 || rn->backend_port != (__u16)ctx->user_port)
		return;
	ctx->user_ip4 = rn->svc_addr;
	ctx->user_port = rn->svc_port;
}

SEC("cgroup/connect4")
int skein_connect4(struct bpf_sock_addr *ctx)
{
	translate(ctx, 0);
	return 1;
}

SEC("cgroup/sendmsg4")
int skein_sendmsg4(struct bpf_sock_addr *ctx)
{
	translate(ctx, 1);
	return 1;
}

SEC("cgroup/recvmsg4")
int skein_recvmsg4(struct bpf_sock_addr *ctx)
{
	received(ctx);
	reverse(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int skein_getpeername4(struct bpf_sock_addr *ctx)
{
	reverse(ctx);
	return 1;
}

#define AF_INET 2

static __always_inline void tcp_failed(struct health *h)
{
	__sync_fetch_and_add(&h->failures, 1);
	__sync_fetch_and_add(&h->consecutive, 1);
	h->last_failure_ns = bpf_ktime_get_ns();
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&skein_failure_seq, &zero);
	if (seq)
		__sync_fetch_and_add(seq, 1);
}

/* TCP health of the connects connect4 rewrote: only sockets with a reverse entry for the backend they
 * connect to are looked at; everything else passes untouched (reply 0: kernel defaults). */
SEC("sockops")
int skein_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	if (op != BPF_SOCK_OPS_TIMEOUT_INIT && op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_RTO_CB && op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	if (skops->family != AF_INET || !skops->is_fullsock)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct revnat *rn = bpf_map_lookup_elem(&skein_revnat, &cookie);
	if (!rn || rn->backend_addr != skops->remote_ip4)
		return 1;
	if (op == BPF_SOCK_OPS_TIMEOUT_INIT) {
		__u32 zero = 0;
		struct config *cfg = bpf_map_lookup_elem(&skein_config, &zero);
		if (cfg && cfg->syn_rto_jiffies)
			skops->reply = cfg->syn_rto_jiffies;
		return 1;
	}
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG);
		return 1;
	}
	struct health_key hk = { .addr = rn->backend_addr, .port = rn->backend_port, .proto = IPPROTO_TCP };
	struct health *h = bpf_map_lookup_elem(&skein_health, &hk);
	if (!h)
		return 1;
	switch (op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		__sync_fetch_and_add(&h->successes, 1);
		h->consecutive = 0;
		h->last_success_ns = bpf_ktime_get_ns();
		/* How it ends is not this counter's business; its retransmission timeouts are, until the backend has
		 * sent a byte (see RTO_CB), and so is whether the backend answers at all (skein_pending: skein_egress
		 * stamps our first data, STATE_CB removes the entry when the connection ends). */
		if (skops->bytes_received == 0) {
			struct pending p = { .addr = rn->backend_addr, .port = rn->backend_port };
			bpf_map_update_elem(&skein_pending, &cookie, &p, BPF_ANY);
		} else
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}
	case BPF_SOCK_OPS_RTO_CB:
		/* A SYN not answered in time: the connect timed out once (each retransmission counts). */
		if (skops->state == BPF_TCP_SYN_SENT) {
			tcp_failed(h);
			break;
		}
		/* Connected, then silence: the first bytes sent went unacknowledged before the backend sent any (it
		 * went silent between its SYN-ACK and the request). Counted once; a backend that answered anything
		 * is not judged by later timeouts (loss on a long connection is not a dead backend). */
		if (skops->bytes_received == 0)
			tcp_failed(h);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTO_CB_FLAG);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* Refused (RST), unreachable, or given up while connecting. Ended before its SYN was ever sent again:
		 * the backend's host answered at once that nothing listens there (or the application gave up on the
		 * connect within one SYN RTO, which is rare) — proof, not a guess: counted as refused too. */
		if (skops->args[0] == BPF_TCP_ESTABLISHED) {
			pending_done(&cookie);
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_STATE_CB_FLAG);
		}
		if (skops->args[0] == BPF_TCP_SYN_SENT && skops->args[1] == BPF_TCP_CLOSE) {
			if (skops->total_retrans == 0) {
				__sync_fetch_and_add(&h->refused, 1);
				h->last_refused_ns = bpf_ktime_get_ns();
			}
			tcp_failed(h);
		}
		break;
	}
	return 1;
}

/* The backend's first byte on a connection it had not answered yet (skein_pending): the entry goes. Only a
 * lookup by socket cookie for everything else; every packet passes. */
SEC("cgroup_skb/ingress")
int skein_ingress(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skb);
	if (!bpf_map_lookup_elem(&skein_pending, &cookie))
		return 1;
	if (tcp_payload(skb))
		pending_done(&cookie);
	return 1;
}

/* Our first data on a connection the backend has not answered yet (skein_pending): stamped once, the moment
 * the request leaves. The same cookie lookup per packet as skein_ingress; every packet passes. */
SEC("cgroup_skb/egress")
int skein_egress(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct pending *p = bpf_map_lookup_elem(&skein_pending, &cookie);
	if (!p || p->sent_ns != 0 || !tcp_payload(skb))
		return 1;
	/* A socket's packets are sent under its lock; were two to race here, the count would only be too high. */
	p->sent_ns = bpf_ktime_get_ns();
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&skein_pending_sent, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
