// Safetensors reader and writer, written for hostile files.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}}, then the data buffer; offsets are relative to the buffer's start.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace reglage::io {

struct SafetensorsEntry {
  std::string name;
  torch::Dtype dtype;
  std::vector<int64_t> shape;
};

// Reads every tensor as a CPU tensor of its stored dtype (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL).
// Checks before reading anything: the header length against a bound and the file size, the JSON, every
// dtype, shape (no negative dims, no overflow) and offset range against the buffer, sizes equal to
// numel * element size, no overlapping tensors. Throws reglage::Error naming the file and the tensor.
std::map<std::string, torch::Tensor> read_safetensors(const std::string& path,
                                                      std::map<std::string, std::string>* metadata = nullptr);

// As read_safetensors, one tensor at a time: `fn(name, tensor)` is called for each in file order, and the
// tensor is released afterwards unless `fn` keeps it (a model's weights then load at the cost of the largest
// tensor instead of the whole file). The header is validated in full before the first call.
void for_each_safetensor(const std::string& path,
                         const std::function<void(const std::string&, torch::Tensor&)>& fn);

// The header only (names, dtypes, shapes), validated like read_safetensors.
std::vector<SafetensorsEntry> read_safetensors_header(const std::string& path);

// A tensor name from a file as it may appear in a one-line error: control bytes shown as \xNN, cut at 200.
std::string shown(const std::string& name);

// Writes tensors (any device, contiguous or not) in the given order; atomic (temp file + rename).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The bytes write_safetensors would write; `path` only names the destination in errors.
std::string encode_safetensors(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata = {},
                               const std::string& path = "<memory>");

}  // namespace reglage::io
