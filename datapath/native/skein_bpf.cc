// skein_bpf: a thin Node-API binding over the system libbpf. It loads BPF objects, attaches cgroup
// programs through bpf_link (pinnable, so an agent restart keeps the datapath), and reads and writes maps
// with raw key/value buffers; layouts are owned by the TypeScript side. Errors carry errno and a message.
#include <napi.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err) {
  if (err < 0) err = -err;
  Napi::Error e = Napi::Error::New(env, what + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")");
  e.Set("errno", Napi::Number::New(env, err));
  return e;
}

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = DefineClass(env, "BpfObject", {
      InstanceMethod("programs", &BpfObject::Programs),
      InstanceMethod("maps", &BpfObject::Maps),
      InstanceMethod("attachCgroup", &BpfObject::AttachCgroup),
      InstanceMethod("pinLink", &BpfObject::PinLink),
      InstanceMethod("detach", &BpfObject::Detach),
      InstanceMethod("update", &BpfObject::Update),
      InstanceMethod("lookup", &BpfObject::Lookup),
      InstanceMethod("remove", &BpfObject::Remove),
      InstanceMethod("keys", &BpfObject::Keys),
      InstanceMethod("entries", &BpfObject::Entries),
      InstanceMethod("replaceLink", &BpfObject::ReplaceLink),
      InstanceMethod("maxEntries", &BpfObject::MaxEntries),
      InstanceMethod("replacedPins", &BpfObject::ReplacedPins),
      InstanceMethod("close", &BpfObject::Close),
    });
    exports.Set("BpfObject", cls);
    return exports;
  }

  // new BpfObject(path, pinDir?): open and load; with pinDir, maps are pinned there and an existing pin is
  // reused (a restarted agent adopts the maps the kernel still uses).
  BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
    Napi::Env env = info.Env();
    std::string path = info[0].As<Napi::String>();
    obj_ = bpf_object__open_file(path.c_str(), nullptr);
    int err = libbpf_get_error(obj_);
    if (err) {
      obj_ = nullptr;
      ErrnoError(env, "open " + path, err).ThrowAsJavaScriptException();
      return;
    }
    if (info.Length() > 1 && info[1].IsString()) {
      std::string dir = info[1].As<Napi::String>();
      bpf_map* m;
      bpf_object__for_each_map(m, obj_) {
        std::string pin = dir + "/" + bpf_map__name(m);
        // A pin an older datapath left with another layout cannot be reused (libbpf refuses the whole load):
        // it is unpinned, so this load makes the map afresh and the agent programs it again.
        if (!PinFits(pin, m)) {
          unlink(pin.c_str());
          replaced_.push_back(bpf_map__name(m));
        }
        bpf_map__set_pin_path(m, pin.c_str());
      }
    }
    err = bpf_object__load(obj_);
    if (err) {
      bpf_object__close(obj_);
      obj_ = nullptr;
      ErrnoError(env, "load " + path, err).ThrowAsJavaScriptException();
    }
  }

  ~BpfObject() { CloseAll(); }

 private:
  bpf_object* obj_ = nullptr;
  std::vector<std::string> replaced_;

  // True when nothing is pinned at `pin`, or what is has the type, sizes and flags `m` is declared with.
  static bool PinFits(const std::string& pin, bpf_map* m) {
    int fd = bpf_obj_get(pin.c_str());
    if (fd < 0) return true;
    bpf_map_info info{};
    __u32 len = sizeof info;
    int err = bpf_obj_get_info_by_fd(fd, &info, &len);
    close(fd);
    if (err) return true;  // libbpf's own check decides
    return info.type == static_cast<__u32>(bpf_map__type(m)) && info.key_size == bpf_map__key_size(m) &&
           info.value_size == bpf_map__value_size(m) && info.max_entries == bpf_map__max_entries(m) &&
           info.map_flags == bpf_map__map_flags(m);
  }
  std::map<int, bpf_link*> links_;
  int next_link_ = 1;

  void CloseAll() {
    for (auto& l : links_) bpf_link__destroy(l.second);  // a pinned link stays attached
    links_.clear();
    if (obj_) bpf_object__close(obj_);
    obj_ = nullptr;
  }

  bool Live(Napi::Env env) {
    if (obj_) return true;
    Napi::Error::New(env, "BPF object is closed").ThrowAsJavaScriptException();
    return false;
  }

  // The named map, or nullptr with a JS exception pending.
  bpf_map* FindMap(Napi::Env env, const std::string& name) {
    bpf_map* m = bpf_object__find_map_by_name(obj_, name.c_str());
    if (!m) Napi::Error::New(env, "no map named " + name).ThrowAsJavaScriptException();
    return m;
  }

  int MapFd(Napi::Env env, const std::string& name) {
    bpf_map* m = FindMap(env, name);
    return m ? bpf_map__fd(m) : -1;
  }

  Napi::Value Programs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    Napi::Array out = Napi::Array::New(env);
    bpf_program* p;
    uint32_t i = 0;
    bpf_object__for_each_program(p, obj_) out.Set(i++, Napi::String::New(env, bpf_program__name(p)));
    return out;
  }

  Napi::Value Maps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    Napi::Array out = Napi::Array::New(env);
    bpf_map* m;
    uint32_t i = 0;
    bpf_object__for_each_map(m, obj_) out.Set(i++, Napi::String::New(env, bpf_map__name(m)));
    return out;
  }

  // attachCgroup(program, cgroupPath) -> link id
  Napi::Value AttachCgroup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    std::string prog = info[0].As<Napi::String>();
    std::string cg = info[1].As<Napi::String>();
    bpf_program* p = bpf_object__find_program_by_name(obj_, prog.c_str());
    if (!p) {
      Napi::Error::New(env, "no program named " + prog).ThrowAsJavaScriptException();
      return env.Null();
    }
    int fd = open(cg.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
      ErrnoError(env, "open cgroup " + cg, errno).ThrowAsJavaScriptException();
      return env.Null();
    }
    bpf_link* link = bpf_program__attach_cgroup(p, fd);
    int err = libbpf_get_error(link);
    close(fd);
    if (err) {
      ErrnoError(env, "attach " + prog + " to " + cg, err).ThrowAsJavaScriptException();
      return env.Null();
    }
    int id = next_link_++;
    links_[id] = link;
    return Napi::Number::New(env, id);
  }

  Napi::Value PinLink(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = info[0].As<Napi::Number>().Int32Value();
    std::string path = info[1].As<Napi::String>();
    auto it = links_.find(id);
    if (it == links_.end()) {
      Napi::Error::New(env, "no link " + std::to_string(id)).ThrowAsJavaScriptException();
      return env.Null();
    }
    int err = bpf_link__pin(it->second, path.c_str());
    if (err) ErrnoError(env, "pin link at " + path, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // detach(id): unpins (if pinned) and detaches.
  Napi::Value Detach(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = info[0].As<Napi::Number>().Int32Value();
    auto it = links_.find(id);
    if (it == links_.end()) return Napi::Boolean::New(env, false);
    bpf_link__unpin(it->second);
    bpf_link__detach(it->second);
    bpf_link__destroy(it->second);
    links_.erase(it);
    return Napi::Boolean::New(env, true);
  }

  Napi::Value Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    std::string name = info[0].As<Napi::String>();
    auto key = info[1].As<Napi::Buffer<uint8_t>>();
    auto val = info[2].As<Napi::Buffer<uint8_t>>();
    int fd = MapFd(env, name);
    if (fd < 0) return env.Null();
    if (bpf_map_update_elem(fd, key.Data(), val.Data(), BPF_ANY)) ErrnoError(env, "update " + name, errno).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    std::string name = info[0].As<Napi::String>();
    auto key = info[1].As<Napi::Buffer<uint8_t>>();
    bpf_map* m = FindMap(env, name);
    if (!m) return env.Null();
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, bpf_map__value_size(m));
    if (bpf_map_lookup_elem(bpf_map__fd(m), key.Data(), out.Data())) {
      if (errno == ENOENT) return env.Null();
      ErrnoError(env, "lookup " + name, errno).ThrowAsJavaScriptException();
      return env.Null();
    }
    return out;
  }

  Napi::Value Remove(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    std::string name = info[0].As<Napi::String>();
    auto key = info[1].As<Napi::Buffer<uint8_t>>();
    int fd = MapFd(env, name);
    if (fd < 0) return env.Null();
    if (bpf_map_delete_elem(fd, key.Data())) {
      if (errno == ENOENT) return Napi::Boolean::New(env, false);
      ErrnoError(env, "delete from " + name, errno).ThrowAsJavaScriptException();
      return env.Null();
    }
    return Napi::Boolean::New(env, true);
  }

  // maxEntries(map): the map's capacity as loaded (a reused pin keeps the size it was created with).
  Napi::Value MaxEntries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    std::string name = info[0].As<Napi::String>();
    bpf_map* m = FindMap(env, name);
    if (!m) return env.Null();
    return Napi::Number::New(env, bpf_map__max_entries(m));
  }

  Napi::Value Keys(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    std::string name = info[0].As<Napi::String>();
    bpf_map* m = FindMap(env, name);
    if (!m) return env.Null();
    size_t ks = bpf_map__key_size(m);
    std::string cur(ks, '\0'), next(ks, '\0');
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    const void* prev = nullptr;
    while (bpf_map_get_next_key(bpf_map__fd(m), prev, next.data()) == 0) {
      out.Set(i++, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(next.data()), ks));
      cur = next;
      prev = cur.data();
    }
    return out;
  }

  // entries(map) -> [key, value][]: one walk in native code (the agent reads skein_health ten times a second).
  // An entry deleted between the key walk and its lookup is left out.
  Napi::Value Entries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    std::string name = info[0].As<Napi::String>();
    bpf_map* m = FindMap(env, name);
    if (!m) return env.Null();
    size_t ks = bpf_map__key_size(m), vs = bpf_map__value_size(m);
    int fd = bpf_map__fd(m);
    std::string cur(ks, '\0'), next(ks, '\0'), val(vs, '\0');
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
      cur = next;
      prev = cur.data();
      if (bpf_map_lookup_elem(fd, cur.data(), val.data())) continue;
      Napi::Array kv = Napi::Array::New(env, 2);
      kv.Set(0u, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(cur.data()), ks));
      kv.Set(1u, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(val.data()), vs));
      out.Set(i++, kv);
    }
    return out;
  }

  // replaceLink(pinPath, program): swaps the program of a pinned cgroup link in place (an upgraded agent's
  // program takes over with no moment where the hook is detached); the link stays pinned.
  Napi::Value ReplaceLink(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env)) return env.Null();
    std::string path = info[0].As<Napi::String>();
    std::string prog = info[1].As<Napi::String>();
    bpf_program* p = bpf_object__find_program_by_name(obj_, prog.c_str());
    if (!p) {
      Napi::Error::New(env, "no program named " + prog).ThrowAsJavaScriptException();
      return env.Null();
    }
    bpf_link* link = bpf_link__open(path.c_str());
    int err = libbpf_get_error(link);
    if (err) {
      ErrnoError(env, "open pinned link " + path, err).ThrowAsJavaScriptException();
      return env.Null();
    }
    err = bpf_link__update_program(link, p);
    bpf_link__disconnect(link);  // keep the kernel link (it is pinned); only this handle goes
    bpf_link__destroy(link);
    if (err) ErrnoError(env, "replace the program of " + path, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // The maps whose pins had another layout and were made afresh by this load.
  Napi::Value ReplacedPins(const Napi::CallbackInfo& info) {
    Napi::Array out = Napi::Array::New(info.Env(), replaced_.size());
    for (size_t i = 0; i < replaced_.size(); i++) out.Set(i, replaced_[i]);
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseAll();
    return info.Env().Undefined();
  }
};

}  // namespace

void RegisterRoutes(Napi::Env env, Napi::Object exports);  // routes.cc

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  RegisterRoutes(env, exports);
  return BpfObject::Init(env, exports);
}

NODE_API_MODULE(skein_bpf, Init)
