// Precompiled header: the torch headers dominate compile time, so they are parsed once per build.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
