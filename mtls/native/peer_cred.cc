// The one thing Node cannot tell about a unix socket: who is on the other end (SO_PEERCRED). The Workload
// API attests its callers from it.
#include <napi.h>
#include <sys/socket.h>
#include <cerrno>
#include <cstring>

static Napi::Value PeerCredentials(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsNumber())
		throw Napi::TypeError::New(env, "peerCredentials(fd): fd must be a number");
	int fd = info[0].As<Napi::Number>().Int32Value();
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		Napi::Error err = Napi::Error::New(env, std::string("getsockopt(SO_PEERCRED): ") + strerror(errno));
		err.Set("errno", Napi::Number::New(env, errno));
		throw err;
	}
	Napi::Object out = Napi::Object::New(env);
	out.Set("pid", Napi::Number::New(env, cred.pid));
	out.Set("uid", Napi::Number::New(env, cred.uid));
	out.Set("gid", Napi::Number::New(env, cred.gid));
	return out;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports)
{
	exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials));
	return exports;
}

NODE_API_MODULE(peer_cred, Init)
