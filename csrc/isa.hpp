// Instruction-set selection for the SIMD kernels (compiled for AVX-512, AVX2 and baseline
// x86-64, chosen at run time). A process-wide cap lets tests run every compiled path.
#pragma once

namespace fedmm {

enum class Isa : int { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

// Best instruction set this CPU supports.
Isa cpu_isa();

// Instruction set the kernels use now: min(cpu_isa(), cap).
Isa active_isa();

// Cap the instruction set (kAvx512 = no cap); returns the resulting active_isa().
Isa set_isa_cap(Isa cap);

const char* isa_name(Isa isa);

}  // namespace fedmm
