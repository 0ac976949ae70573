// Placeholder until this family's CPU kernels land; every op here throws.
#include "../tensor.h"
namespace tsclip {
void cpu_conv2d_fwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_conv2d_bwd_data(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_conv2d_bwd_weight(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_batchnorm_fwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_batchnorm_bwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_avgpool2d_fwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_avgpool2d_bwd(const OpArgs& a) { a.fail("not implemented yet"); }
}
