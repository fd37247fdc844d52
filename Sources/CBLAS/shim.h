// No include guard of our own: OpenBLAS's cblas.h guards itself with CBLAS_H,
// and a guard of that name here would hide it.
#include <cblas.h>
