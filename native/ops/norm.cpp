// Placeholder until this family's CPU kernels land; every op here throws.
#include "../tensor.h"
namespace tsclip {
void cpu_layernorm_fwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_layernorm_bwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_l2norm_fwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_l2norm_bwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_softmax_fwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_softmax_bwd(const OpArgs& a) { a.fail("not implemented yet"); }
}
