// Placeholder until this family's CPU kernels land; every op here throws.
#include "../tensor.h"
namespace tsclip {
void cpu_cross_entropy_fwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_cross_entropy_bwd(const OpArgs& a) { a.fail("not implemented yet"); }
}
