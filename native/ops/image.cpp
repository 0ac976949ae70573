// Placeholder until this family's CPU kernels land; every op here throws.
#include "../tensor.h"
namespace tsclip {
void cpu_resample_bicubic(const OpArgs& a) { a.fail("not implemented yet"); }
void cpu_image_normalize(const OpArgs& a) { a.fail("not implemented yet"); }
}
