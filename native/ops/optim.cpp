// Placeholder until this family's CPU kernels land; every op here throws.
#include "../tensor.h"
namespace tsclip {
void cpu_adamw(const OpArgs& a) { a.fail("not implemented yet"); }
}
