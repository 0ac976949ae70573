// The N-API glue: storages (owned native buffers), the op call, and introspection. No kernel code
// here; every native failure becomes a JS Error instead of aborting the process.
#include <napi.h>

#include <atomic>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu/features.h"
#include "cpu/threadpool.h"
#include "cuda/runtime.h"

#ifndef TSCLIP_VERSION
#define TSCLIP_VERSION "0.0.0"
#endif

using namespace tsclip;

namespace {

// A block of native memory on one device. JS holds it through Tensor objects; dispose() frees it
// at once, the finalizer only if it was forgotten.
class Storage : public Napi::ObjectWrap<Storage> {
 public:
  // No static reference to the class: the module is loaded once per environment (worker threads
  // too), and a static Napi::Reference would outlive the environment that made it.
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Storage", {
      InstanceMethod("dispose", &Storage::Dispose),
      InstanceMethod("write", &Storage::Write),
      InstanceMethod("read", &Storage::Read),
      InstanceAccessor("nbytes", &Storage::NBytes, nullptr),
      InstanceAccessor("disposed", &Storage::Disposed, nullptr),
    });
    exports.Set("Storage", f);
  }

  Storage(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Storage>(info) {
    Napi::Env env = info.Env();
    nbytes_ = size_t(info[0].As<Napi::Number>().Int64Value());
    device_ = Device(info[1].As<Napi::Number>().Int32Value());
    try {
      ptr_ = device_alloc(device_, nbytes_);
    } catch (const std::exception& e) {
      Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
      return;
    }
    Napi::MemoryManagement::AdjustExternalMemory(env, int64_t(nbytes_));
    live_.fetch_add(1);
  }
  ~Storage() override { release(nullptr); }

  // Storages holding memory in this process: made and neither disposed nor collected yet.
  static int64_t live() { return live_.load(); }

  void* ptr(Napi::Env env) const {
    if (!ptr_) throw Napi::Error::New(env, "tensor used after dispose()");
    return ptr_;
  }
  Device device() const { return device_; }
  size_t nbytes() const { return nbytes_; }

 private:
  void release(Napi::Env* env) {
    if (!ptr_) return;
    try { device_free(device_, ptr_); } catch (...) {}
    ptr_ = nullptr;
    live_.fetch_sub(1);
    if (env) Napi::MemoryManagement::AdjustExternalMemory(*env, -int64_t(nbytes_));
  }
  void Finalize(Napi::Env env) override { release(&env); }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    release(&env);
    return env.Undefined();
  }
  Napi::Value NBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(nbytes_)); }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), ptr_ == nullptr); }

  // write(byteOffset, typedArray): copies host bytes in.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t off = size_t(info[0].As<Napi::Number>().Int64Value());
    auto arr = info[1].As<Napi::TypedArray>();
    size_t n = arr.ByteLength();
    if (off + n > nbytes_) throw Napi::RangeError::New(env, "write past the end of the storage");
    auto* src = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
    try {
      device_copy(device_, static_cast<uint8_t*>(ptr(env)) + off, Device::CPU, src, n);
    } catch (const Napi::Error&) { throw; } catch (const std::exception& e) { throw Napi::Error::New(env, e.what()); }
    return env.Undefined();
  }
  // read(byteOffset, nbytes): a new ArrayBuffer with a copy of the bytes.
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t off = size_t(info[0].As<Napi::Number>().Int64Value());
    size_t n = size_t(info[1].As<Napi::Number>().Int64Value());
    if (off + n > nbytes_) throw Napi::RangeError::New(env, "read past the end of the storage");
    auto buf = Napi::ArrayBuffer::New(env, n);
    try {
      device_copy(Device::CPU, buf.Data(), device_, static_cast<uint8_t*>(ptr(env)) + off, n);
    } catch (const Napi::Error&) { throw; } catch (const std::exception& e) { throw Napi::Error::New(env, e.what()); }
    return buf;
  }

  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  Device device_ = Device::CPU;
  static inline std::atomic<int64_t> live_{0};
};

// A tensor descriptor from JS: [storage, dtype, offsetElements, shape[], strides[]] or null.
TensorRef parse_tensor(Napi::Env env, Napi::Value v) {
  TensorRef t;
  if (v.IsNull() || v.IsUndefined()) return t;
  auto a = v.As<Napi::Array>();
  auto* s = Storage::Unwrap(a.Get(0u).As<Napi::Object>());
  t.dtype = DType(a.Get(1u).As<Napi::Number>().Int32Value());
  int64_t offset = a.Get(2u).As<Napi::Number>().Int64Value();
  auto shape = a.Get(3u).As<Napi::Array>();
  auto strides = a.Get(4u).As<Napi::Array>();
  if (shape.Length() > size_t(kMaxDims)) throw Napi::Error::New(env, "tensors have at most 8 dimensions");
  t.ndim = int(shape.Length());
  int64_t lo = 0, hi = 0;  // element extent touched by the view, to check it stays in the storage
  bool empty = false;      // no elements: the view touches nothing
  for (int i = 0; i < t.ndim; i++) {
    t.shape[i] = shape.Get(uint32_t(i)).As<Napi::Number>().Int64Value();
    t.strides[i] = strides.Get(uint32_t(i)).As<Napi::Number>().Int64Value();
    if (t.shape[i] == 0) empty = true;
    int64_t span = (t.shape[i] - 1) * t.strides[i];
    (span < 0 ? lo : hi) += span;
  }
  int64_t es = dtype_size(t.dtype);
  if (!empty && (offset + lo < 0 || (offset + hi + 1) * es > int64_t(s->nbytes())))
    throw Napi::RangeError::New(env, "tensor view lies outside its storage");
  t.device = s->device();
  t.data = static_cast<uint8_t*>(s->ptr(env)) + offset * es;
  return t;
}

// run(opId, inputs, outputs, ints, floats)
Napi::Value Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpArgs args;
  int id = info[0].As<Napi::Number>().Int32Value();
  auto ins = info[1].As<Napi::Array>(), outs = info[2].As<Napi::Array>();
  auto ints = info[3].As<Napi::Array>(), floats = info[4].As<Napi::Array>();
  for (uint32_t i = 0; i < ins.Length(); i++) args.in.push_back(parse_tensor(env, ins.Get(i)));
  for (uint32_t i = 0; i < outs.Length(); i++) args.out.push_back(parse_tensor(env, outs.Get(i)));
  for (uint32_t i = 0; i < ints.Length(); i++) args.ints.push_back(ints.Get(i).As<Napi::Number>().Int64Value());
  for (uint32_t i = 0; i < floats.Length(); i++) args.floats.push_back(floats.Get(i).As<Napi::Number>().DoubleValue());
  try {
    run_op(id, args);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

// copy(dst, dstByteOffset, src, srcByteOffset, nbytes): raw bytes between any devices.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* dst = Storage::Unwrap(info[0].As<Napi::Object>());
  size_t doff = size_t(info[1].As<Napi::Number>().Int64Value());
  auto* src = Storage::Unwrap(info[2].As<Napi::Object>());
  size_t soff = size_t(info[3].As<Napi::Number>().Int64Value());
  size_t n = size_t(info[4].As<Napi::Number>().Int64Value());
  if (doff + n > dst->nbytes() || soff + n > src->nbytes()) throw Napi::RangeError::New(env, "copy out of range");
  try {
    device_copy(dst->device(), static_cast<uint8_t*>(dst->ptr(env)) + doff, src->device(),
                static_cast<uint8_t*>(src->ptr(env)) + soff, n);
  } catch (const Napi::Error&) { throw; } catch (const std::exception& e) { throw Napi::Error::New(env, e.what()); }
  return env.Undefined();
}

Napi::Value OpNames(const Napi::CallbackInfo& info) {
  auto a = Napi::Array::New(info.Env(), op_count());
  for (int i = 0; i < op_count(); i++) a.Set(uint32_t(i), op_name(i));
  return a;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("version", TSCLIP_VERSION);
  o.Set("cudaCompiled", cuda::compiled());
  auto f = cpu_features();
  auto cpu = Napi::Object::New(env);
  cpu.Set("avx2", f.avx2);
  cpu.Set("fma", f.fma);
  cpu.Set("avx512f", f.avx512f);
  cpu.Set("avx512bf16", f.avx512bf16);
  o.Set("cpu", cpu);
  o.Set("threads", num_threads());
  std::string why;
  std::vector<cuda::DeviceInfo> devs;
  try { devs = cuda::devices(&why); } catch (const std::exception& e) { why = e.what(); }
  auto arr = Napi::Array::New(env, devs.size());
  for (size_t i = 0; i < devs.size(); i++) {
    auto d = Napi::Object::New(env);
    d.Set("name", devs[i].name);
    d.Set("totalMemory", double(devs[i].total_memory));
    d.Set("computeCapability", std::to_string(devs[i].major) + "." + std::to_string(devs[i].minor));
    d.Set("multiprocessors", devs[i].multiprocessors);
    arr.Set(uint32_t(i), d);
  }
  o.Set("cudaDevices", arr);
  o.Set("cudaUnavailableReason", why);
  return o;
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

Napi::Value CudaMemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = cuda::memory_stats();
  auto o = Napi::Object::New(env);
  o.Set("reserved", double(s.reserved));
  o.Set("used", double(s.used));
  o.Set("peakUsed", double(s.peak_used));
  return o;
}

Napi::Value LiveStorages(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(Storage::live())); }

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  try {
    device_synchronize(Device(info[0].As<Napi::Number>().Int32Value()));
  } catch (const std::exception& e) { throw Napi::Error::New(info.Env(), e.what()); }
  return info.Env().Undefined();
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  cuda::empty_cache();
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Storage::Init(env, exports);
  exports.Set("run", Napi::Function::New(env, Run));
  exports.Set("copy", Napi::Function::New(env, Copy));
  exports.Set("opNames", Napi::Function::New(env, OpNames));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("cudaMemoryStats", Napi::Function::New(env, CudaMemoryStats));
  exports.Set("liveStorages", Napi::Function::New(env, LiveStorages));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("emptyCache", Napi::Function::New(env, EmptyCache));
  return exports;
}

}  // namespace

NODE_API_MODULE(tsclip, Init)
