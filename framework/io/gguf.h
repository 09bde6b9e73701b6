// GGUF files (llama.cpp's model format), versions 2 and 3, little endian, read through a read-only memory map.
// Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv x (string key, u32 value type, value);
// n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset); padding to
// general.alignment (default 32); the data section, where each tensor's offset is relative to its start.
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements (arrays nest).
// ne[0] is the innermost (contiguous) dimension: a torch shape is ne reversed.
//
// Written for hostile files: every count and length is checked against the bytes that remain before
// anything is reserved, so no allocation exceeds what the file can hold; tensors must lie inside the file,
// aligned, without overlapping; errors are one line naming the file and the problem (reglage::Error).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "framework/io/gguf_quants.h"

namespace reglage::io {

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* gguf_type_name(GgufValueType type);

// One metadata value. Scalars keep their exact value (integers in u or i by signedness, floats widened to
// double). Arrays stay as compact as in the file: numbers and bools as their raw little-endian bytes,
// strings concatenated in `raw` with their end offsets, arrays of arrays as elements.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  uint64_t u = 0;        // kUint8/16/32/64, kBool
  int64_t i = 0;         // kInt8/16/32/64
  double f = 0;          // kFloat32/64
  std::string s;         // kString
  // Arrays
  GgufValueType elem_type = GgufValueType::kUint8;
  uint64_t count = 0;
  std::string raw;                  // numeric / bool elements (count x element size), or the strings' bytes
  std::vector<uint64_t> string_ends;// kString elements: element k is raw[end(k-1), end(k))
  std::vector<GgufValue> arrays;    // kArray elements

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::kFloat32 || type == GgufValueType::kFloat64; }
  // Element `k` of a numeric array, as the type it is stored in widened (throws on other arrays).
  double number_at(uint64_t k) const;
  int64_t integer_at(uint64_t k) const;
  std::string_view string_at(uint64_t k) const;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // torch order: outermost first (ne reversed)
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;         // from the start of the data section
  uint64_t n_bytes = 0;
  int64_t numel = 0;
  int64_t row_length() const { return shape.empty() ? 1 : shape.back(); }  // ne[0]
};

class GgufFile {
 public:
  // Maps `path` read-only and parses everything but the tensor data. Throws reglage::Error naming the file.
  explicit GgufFile(const std::string& path);
  // Parses `size` bytes at `data` (which must outlive the object); `name` stands for the file in errors.
  GgufFile(const uint8_t* data, size_t size, const std::string& name);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  // Typed lookups: nullopt-like `fallback` when absent; a wrong type throws naming the file and key.
  std::string get_string(const std::string& key, const std::string& fallback, bool required = false) const;
  int64_t get_int(const std::string& key, int64_t fallback, bool required = false) const;
  double get_double(const std::string& key, double fallback, bool required = false) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const uint8_t* tensor_data(const GgufTensorInfo& t) const { return data_ + data_offset_ + t.offset; }

  // Dequantizes tensor `t` into `dst`: contiguous, float32 or bfloat16, t.numel elements (any shape).
  void read_into(const GgufTensorInfo& t, torch::Tensor& dst) const;
  // Rows of `t` (a matrix: ne[0] columns) in the order `rows` lists, into a contiguous (rows.size(), ne[0]) dst.
  void read_rows_into(const GgufTensorInfo& t, const std::vector<int64_t>& rows, torch::Tensor& dst) const;
  // A new tensor of t's shape in `dtype` (float32 or bfloat16).
  torch::Tensor load(const GgufTensorInfo& t, torch::Dtype dtype = torch::kFloat32) const;

 private:
  void parse();

  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;  // the mapping when this object made it (munmap'd by the destructor)
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// True when `path` is a regular file that starts with "GGUF" or is named *.gguf.
bool is_gguf_path(const std::string& path);

}  // namespace reglage::io
