// Whether at::parallel_for in our own code reaches LibTorch's intra-op threads.
// at::parallel_for is a header template: with LibTorch's OpenMP backend it is a `#pragma omp parallel` compiled
// into the caller, and in a translation unit built without -fopenmp it runs the whole range on the calling
// thread, silently. The framework is built with OpenMP (CMakeLists.txt); this lets a test hold it to that.
#pragma once

namespace reglage::core {

// Distinct threads that ran a parallel_for of at::get_num_threads() items (grain 1) compiled in the framework.
int parallel_for_threads_reached();

}  // namespace reglage::core
