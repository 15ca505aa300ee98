// Run-time instruction-set detection and the process-wide cap (see isa.hpp).
#include "isa.hpp"

#include <algorithm>
#include <atomic>

namespace fedmm {

namespace {
std::atomic<int> g_cap{static_cast<int>(Isa::kAvx512)};
}  // namespace

Isa cpu_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2")) return Isa::kAvx2;
    return Isa::kBase;
  }();
  return isa;
}

Isa active_isa() {
  return static_cast<Isa>(std::min(static_cast<int>(cpu_isa()), g_cap.load(std::memory_order_relaxed)));
}

Isa set_isa_cap(Isa cap) {
  g_cap.store(static_cast<int>(cap), std::memory_order_relaxed);
  return active_isa();
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "base";
  }
}

}  // namespace fedmm
