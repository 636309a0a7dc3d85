// Socket-level load balancing for global services (cgroup sock_addr hooks). Deliberately a plain lookup:
// all policy (affinity, readiness, failover) is computed in user space by the node agent, which writes
// only the active backends here. A service has a master entry (slot 0) holding the backend count and
// entries for slots 1..count holding backend IDs; the agent writes new slots first and switches the count
// last, so a connect never sees a half-written service.
#include <linux/bpf.h>
#include <linux/in.h>
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

static __always_inline int proto_of(struct bpf_sock_addr *ctx)
{
	return ctx->type == 1 /* SOCK_STREAM */ ? IPPROTO_TCP : IPPROTO_UDP;
}

/* Rewrites ctx to a backend if its destination is a service with active backends. */
static __always_inline void translate(struct bpf_sock_addr *ctx)
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
	translate(ctx);
	return 1;
}

SEC("cgroup/sendmsg4")
int skein_sendmsg4(struct bpf_sock_addr *ctx)
{
	translate(ctx);
	return 1;
}

SEC("cgroup/recvmsg4")
int skein_recvmsg4(struct bpf_sock_addr *ctx)
{
	reverse(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int skein_getpeername4(struct bpf_sock_addr *ctx)
{
	reverse(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
