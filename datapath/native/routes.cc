// Kernel routes to other clusters' pod CIDRs, over rtnetlink (the agent's image carries no iproute2). Every
// route is written with Skein's own protocol number, so the agent lists back exactly what it installed
// (after a restart too) and never touches a route someone else made. IPv4, main table, unicast via a gateway.
#include <napi.h>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace {

// Unassigned in iproute2's rt_protos (bird 12, zebra 11, babel 42, kernel 2, static 4); `ip route show proto 193`.
constexpr unsigned char RTPROT_SKEIN = 193;
// Its own metric too: a replace only ever replaces a route of the same prefix *and* metric, so an operator's
// route to the same prefix (metric 0 unless set) is left alone and wins.
constexpr unsigned RT_METRIC_SKEIN = 193;

struct Route {
  in_addr dst;
  int prefixLen;
  in_addr via;
};

struct Request {
  nlmsghdr nh;
  rtmsg rt;
  char attrs[64];
};

Napi::Error NetlinkError(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")");
  e.Set("errno", Napi::Number::New(env, err));
  return e;
}

void AddAttr(Request& r, unsigned short type, const void* data, size_t len) {
  auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&r) + NLMSG_ALIGN(r.nh.nlmsg_len));
  rta->rta_type = type;
  rta->rta_len = RTA_LENGTH(len);
  std::memcpy(RTA_DATA(rta), data, len);
  r.nh.nlmsg_len = NLMSG_ALIGN(r.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

Request NewRequest(unsigned short type, unsigned short flags) {
  Request r{};
  r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  r.nh.nlmsg_type = type;
  r.nh.nlmsg_flags = NLM_F_REQUEST | flags;
  r.nh.nlmsg_seq = 1;
  r.rt.rtm_family = AF_INET;
  r.rt.rtm_table = RT_TABLE_MAIN;
  r.rt.rtm_protocol = RTPROT_SKEIN;
  r.rt.rtm_scope = RT_SCOPE_UNIVERSE;
  r.rt.rtm_type = RTN_UNICAST;
  return r;
}

// Sends one request and reads until its ack (0 or -errno) or, for a dump, NLMSG_DONE; each route message
// of a dump goes to `onRoute`. Returns 0 or a positive errno.
template <typename F>
int Exchange(Request& r, F onRoute) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return errno;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, &r, r.nh.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    int err = errno;
    close(fd);
    return err;
  }
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return err;
    }
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        close(fd);
        return 0;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        int err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
        close(fd);
        return err;
      }
      if (h->nlmsg_type == RTM_NEWROUTE) onRoute(h);
    }
  }
}

bool ParseArgs(const Napi::CallbackInfo& info, Route& out, bool withVia) {
  Napi::Env env = info.Env();
  if (info.Length() < (withVia ? 3u : 2u) || !info[0].IsString() || !info[1].IsNumber() || (withVia && !info[2].IsString())) {
    Napi::TypeError::New(env, withVia ? "expected (dst, prefixLen, via)" : "expected (dst, prefixLen)").ThrowAsJavaScriptException();
    return false;
  }
  std::string dst = info[0].As<Napi::String>();
  out.prefixLen = info[1].As<Napi::Number>().Int32Value();
  if (inet_pton(AF_INET, dst.c_str(), &out.dst) != 1 || out.prefixLen < 0 || out.prefixLen > 32) {
    Napi::TypeError::New(env, "bad destination " + dst + "/" + std::to_string(out.prefixLen)).ThrowAsJavaScriptException();
    return false;
  }
  if (withVia) {
    std::string via = info[2].As<Napi::String>();
    if (inet_pton(AF_INET, via.c_str(), &out.via) != 1) {
      Napi::TypeError::New(env, "bad gateway " + via).ThrowAsJavaScriptException();
      return false;
    }
  }
  return true;
}

// routeReplace(dst, prefixLen, via): installs or moves the route to dst/prefixLen via the gateway.
Napi::Value RouteReplace(const Napi::CallbackInfo& info) {
  Route rt{};
  if (!ParseArgs(info, rt, true)) return info.Env().Undefined();
  Request r = NewRequest(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK);
  r.rt.rtm_dst_len = static_cast<unsigned char>(rt.prefixLen);
  AddAttr(r, RTA_DST, &rt.dst, sizeof rt.dst);
  AddAttr(r, RTA_GATEWAY, &rt.via, sizeof rt.via);
  AddAttr(r, RTA_PRIORITY, &RT_METRIC_SKEIN, sizeof RT_METRIC_SKEIN);
  int err = Exchange(r, [](nlmsghdr*) {});
  if (err) NetlinkError(info.Env(), "route replace", err).ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

// routeDelete(dst, prefixLen): removes Skein's route to dst/prefixLen (the protocol must match: never another's).
Napi::Value RouteDelete(const Napi::CallbackInfo& info) {
  Route rt{};
  if (!ParseArgs(info, rt, false)) return info.Env().Undefined();
  Request r = NewRequest(RTM_DELROUTE, NLM_F_ACK);
  r.rt.rtm_dst_len = static_cast<unsigned char>(rt.prefixLen);
  r.rt.rtm_scope = RT_SCOPE_NOWHERE;
  AddAttr(r, RTA_DST, &rt.dst, sizeof rt.dst);
  AddAttr(r, RTA_PRIORITY, &RT_METRIC_SKEIN, sizeof RT_METRIC_SKEIN);
  int err = Exchange(r, [](nlmsghdr*) {});
  if (err) NetlinkError(info.Env(), "route delete", err).ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

// routeList(): the main table's IPv4 routes of Skein's protocol, as { dst, prefixLen, via }.
Napi::Value RouteList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Request r = NewRequest(RTM_GETROUTE, NLM_F_DUMP);
  r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  std::vector<Route> found;
  int err = Exchange(r, [&found](nlmsghdr* h) {
    auto* rt = reinterpret_cast<rtmsg*>(NLMSG_DATA(h));
    if (rt->rtm_family != AF_INET || rt->rtm_protocol != RTPROT_SKEIN) return;
    Route route{};
    route.prefixLen = rt->rtm_dst_len;
    unsigned table = rt->rtm_table;
    int len = RTM_PAYLOAD(h);
    for (auto* a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      if (a->rta_type == RTA_DST) std::memcpy(&route.dst, RTA_DATA(a), sizeof route.dst);
      if (a->rta_type == RTA_GATEWAY) std::memcpy(&route.via, RTA_DATA(a), sizeof route.via);
      if (a->rta_type == RTA_TABLE) std::memcpy(&table, RTA_DATA(a), sizeof table);
    }
    if (table == RT_TABLE_MAIN) found.push_back(route);
  });
  if (err) {
    NetlinkError(env, "route list", err).ThrowAsJavaScriptException();
    return env.Null();
  }
  Napi::Array out = Napi::Array::New(env, found.size());
  for (size_t i = 0; i < found.size(); i++) {
    char dst[INET_ADDRSTRLEN], via[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &found[i].dst, dst, sizeof dst);
    inet_ntop(AF_INET, &found[i].via, via, sizeof via);
    Napi::Object o = Napi::Object::New(env);
    o.Set("dst", dst);
    o.Set("prefixLen", found[i].prefixLen);
    o.Set("via", via);
    out.Set(i, o);
  }
  return out;
}

}  // namespace

void RegisterRoutes(Napi::Env env, Napi::Object exports) {
  exports.Set("routeReplace", Napi::Function::New(env, RouteReplace));
  exports.Set("routeDelete", Napi::Function::New(env, RouteDelete));
  exports.Set("routeList", Napi::Function::New(env, RouteList));
  exports.Set("ROUTE_PROTOCOL", Napi::Number::New(env, RTPROT_SKEIN));
}
