// Placeholder until this family's CPU kernels land; every op here throws.
#include "../tensor.h"
namespace tsclip {
void cpu_clip_loss_fwd(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_clip_loss_bwd(const OpArgs& a) { a.fail("not implemented yet"); }
}
