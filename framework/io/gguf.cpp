// GGUF parser: header, metadata, tensor infos and bounds checks over a read-only memory map.
#include "framework/io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "framework/core/error.h"

namespace reglage::io {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;             // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;            // arrays of arrays: real files use 0 or 1 level
constexpr uint64_t kDefaultAlignment = 32;   // GGUF_DEFAULT_ALIGNMENT

// Bytes of one element of a fixed-size value type; 0 for strings and arrays.
uint64_t fixed_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64: return 8;
    default: return 0;
  }
}

bool known_type(uint32_t t) { return t <= uint32_t(GgufValueType::kFloat64); }

// The shortest decimal that reads back as the same float: 1e-6f gives 1e-06, not 9.99999997e-07, so a
// float32 metadata value (rms epsilon, rope base) becomes the double a config.json would have held.
double shortest_double(float f) {
  char buf[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, double(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return double(f);
}

// Reads little-endian fields with a bounds check each; errors name the file, the item and the offset.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& path) : data_(data), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      fail(path_, ": truncated: ", what, " needs ", n, " bytes at offset ", pos_, " but the file ends at ", size_);
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string_view read_bytes(uint64_t n, const std::string& what) {
    need(n, what);
    std::string_view v(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += n;
    return v;
  }
  std::string_view read_string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " (string length)");
    if (len > remaining())
      fail(path_, ": ", what, ": string length ", len, " at offset ", pos_ - 8, " runs past the end of the file (",
           remaining(), " bytes left)");
    return read_bytes(len, what);
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

void read_value(Cursor& c, GgufValue& v, GgufValueType type, int depth, const std::string& what,
                const std::string& path, uint64_t file_size) {
  v.type = type;
  switch (type) {
    case GgufValueType::kUint8: v.u = c.read<uint8_t>(what); return;
    case GgufValueType::kInt8: v.i = c.read<int8_t>(what); return;
    case GgufValueType::kUint16: v.u = c.read<uint16_t>(what); return;
    case GgufValueType::kInt16: v.i = c.read<int16_t>(what); return;
    case GgufValueType::kUint32: v.u = c.read<uint32_t>(what); return;
    case GgufValueType::kInt32: v.i = c.read<int32_t>(what); return;
    case GgufValueType::kUint64: v.u = c.read<uint64_t>(what); return;
    case GgufValueType::kInt64: v.i = c.read<int64_t>(what); return;
    case GgufValueType::kFloat32: v.f = c.read<float>(what); return;
    case GgufValueType::kFloat64: v.f = c.read<double>(what); return;
    case GgufValueType::kBool: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) fail(path, ": ", what, ": bool value ", int(b), " at offset ", c.pos() - 1, " (expected 0 or 1)");
      v.u = b;
      return;
    }
    case GgufValueType::kString: v.s = std::string(c.read_string(what)); return;
    case GgufValueType::kArray: break;
  }
  if (depth >= kMaxArrayDepth)
    fail(path, ": ", what, ": arrays nested deeper than ", kMaxArrayDepth, " levels at offset ", c.pos());
  const uint32_t elem = c.read<uint32_t>(what + " (array element type)");
  if (!known_type(elem)) fail(path, ": ", what, ": unknown array element type ", elem, " at offset ", c.pos() - 4);
  v.elem_type = GgufValueType(elem);
  v.count = c.read<uint64_t>(what + " (array length)");
  // The least each element occupies in the file; a count the remaining bytes cannot hold is rejected
  // before anything is reserved.
  const uint64_t fixed = fixed_size(v.elem_type);
  const uint64_t least = fixed ? fixed : v.elem_type == GgufValueType::kString ? 8 : 12;
  if (v.count > c.remaining() / least)
    fail(path, ": ", what, ": array of ", v.count, " ", gguf_type_name(v.elem_type), " at offset ", c.pos() - 8,
         " cannot fit in the ", c.remaining(), " bytes left in the file");
  if (fixed) {
    v.raw = std::string(c.read_bytes(v.count * fixed, what));
    if (v.elem_type == GgufValueType::kBool)
      for (char b : v.raw)
        if (uint8_t(b) > 1) fail(path, ": ", what, ": bool element ", int(uint8_t(b)), " (expected 0 or 1)");
  } else if (v.elem_type == GgufValueType::kString) {
    v.string_ends.reserve(size_t(v.count));
    for (uint64_t k = 0; k < v.count; ++k) {
      v.raw += c.read_string(what);  // the strings' bytes lie in the file: raw never outgrows it
      v.string_ends.push_back(v.raw.size());
    }
  } else {
    // A nested array value is far larger in memory than its 12-byte minimum in the file: bound the total.
    if (v.count * sizeof(GgufValue) > file_size)
      fail(path, ": ", what, ": array of ", v.count, " arrays is larger than this reader accepts for a file of ",
           file_size, " bytes");
    v.arrays.resize(size_t(v.count));
    for (auto& a : v.arrays) read_value(c, a, v.elem_type, depth + 1, what, path, file_size);
  }
}

std::string describe_supported() {
  return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";
}

}  // namespace

const char* gguf_type_name(GgufValueType type) {
  static const char* const kNames[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32", "float32",
                                       "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return known_type(uint32_t(type)) ? kNames[uint32_t(type)] : "unknown";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kUint16:
    case GgufValueType::kInt16: case GgufValueType::kUint32: case GgufValueType::kInt32:
    case GgufValueType::kUint64: case GgufValueType::kInt64: return true;
    default: return false;
  }
}

double GgufValue::number_at(uint64_t k) const {
  if (type != GgufValueType::kArray || k >= count || fixed_size(elem_type) == 0)
    fail("GGUF value: element ", k, " is not a number of this array");
  const char* p = raw.data() + k * fixed_size(elem_type);
  auto get = [p](auto v) { std::memcpy(&v, p, sizeof(v)); return v; };
  switch (elem_type) {
    case GgufValueType::kFloat32: return get(float());
    case GgufValueType::kFloat64: return get(double());
    case GgufValueType::kUint64: return double(get(uint64_t()));
    default: return double(integer_at(k));
  }
}

int64_t GgufValue::integer_at(uint64_t k) const {
  if (type != GgufValueType::kArray || k >= count || fixed_size(elem_type) == 0)
    fail("GGUF value: element ", k, " is not a number of this array");
  const char* p = raw.data() + k * fixed_size(elem_type);
  auto get = [p](auto v) { std::memcpy(&v, p, sizeof(v)); return v; };
  switch (elem_type) {
    case GgufValueType::kUint8: case GgufValueType::kBool: return get(uint8_t());
    case GgufValueType::kInt8: return get(int8_t());
    case GgufValueType::kUint16: return get(uint16_t());
    case GgufValueType::kInt16: return get(int16_t());
    case GgufValueType::kUint32: return get(uint32_t());
    case GgufValueType::kInt32: return get(int32_t());
    case GgufValueType::kUint64: return int64_t(get(uint64_t()));
    case GgufValueType::kInt64: return get(int64_t());
    case GgufValueType::kFloat32: return int64_t(get(float()));
    case GgufValueType::kFloat64: return int64_t(get(double()));
    default: return 0;
  }
}

std::string_view GgufValue::string_at(uint64_t k) const {
  if (type != GgufValueType::kArray || elem_type != GgufValueType::kString || k >= count)
    fail("GGUF value: element ", k, " is not a string of this array");
  const uint64_t begin = k == 0 ? 0 : string_ends[k - 1];
  return std::string_view(raw).substr(begin, string_ends[k] - begin);
}

GgufFile::GgufFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file (expected a GGUF file)");
  }
  size_ = uint64_t(st.st_size);
  if (size_ > 0) {
    map_ = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      fail(path, ": cannot memory-map ", size_, " bytes (", std::strerror(err), ")");
    }
    data_ = static_cast<const uint8_t*>(map_);
  } else {
    ::close(fd);
  }
  try {
    parse();
  } catch (...) {
    if (map_) ::munmap(map_, size_t(size_));
    map_ = nullptr;
    throw;
  }
}

GgufFile::GgufFile(const uint8_t* data, size_t size, const std::string& name)
    : path_(name), data_(data), size_(size) {
  parse();
}

GgufFile::~GgufFile() {
  if (map_) ::munmap(map_, size_t(size_));
}

void GgufFile::parse() {
  Cursor c(data_, size_, path_);
  if (size_ < 4) fail(path_, ": ", size_, " bytes is too short for a GGUF file (truncated header)");
  const uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kGgufMagic) fail(path_, ": not a GGUF file (the first 4 bytes are not \"GGUF\")");
  version_ = c.read<uint32_t>("header version");
  if (version_ != 2 && version_ != 3) {
    if (version_ == 1) fail(path_, ": GGUF version 1 is not supported (expected version 2 or 3)");
    // A big-endian file's version reads byte-swapped here.
    if (version_ == 0x02000000u || version_ == 0x03000000u)
      fail(path_, ": big-endian GGUF files are not supported (expected little endian)");
    fail(path_, ": GGUF version ", version_, " is not supported (expected version 2 or 3)");
  }
  const uint64_t n_tensors = c.read<uint64_t>("header tensor count");
  const uint64_t n_kv = c.read<uint64_t>("header metadata count");
  // Least bytes per entry: a key (8-byte length) + type (4) + 1-byte value; a tensor info 8 + 4 + 8 + 4 + 8.
  if (n_kv > c.remaining() / 13)
    fail(path_, ": header claims ", n_kv, " metadata entries, more than the ", c.remaining(),
         " bytes left in the file can hold");
  if (n_tensors > c.remaining() / 32)
    fail(path_, ": header claims ", n_tensors, " tensors, more than the ", c.remaining(),
         " bytes left in the file can hold");

  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string where = "metadata entry " + std::to_string(k);
    std::string key(c.read_string(where + " key"));
    const std::string what = "metadata key '" + key + "'";
    const uint32_t type = c.read<uint32_t>(what + " (value type)");
    if (!known_type(type)) fail(path_, ": ", what, ": unknown value type ", type, " at offset ", c.pos() - 4);
    GgufValue v;
    read_value(c, v, GgufValueType(type), 0, what, path_, size_);
    if (!metadata_.emplace(key, std::move(v)).second) fail(path_, ": ", what, " appears twice");
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufValueType::kUint32)
      fail(path_, ": metadata key 'general.alignment' has type ", gguf_type_name(a->type), " (expected uint32)");
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      fail(path_, ": general.alignment = ", a->u, " (expected a power of two)");
    alignment_ = a->u;
  } else {
    alignment_ = kDefaultAlignment;
  }

  for (uint64_t k = 0; k < n_tensors; ++k) {
    const std::string where = "tensor info " + std::to_string(k);
    GgufTensorInfo t;
    t.name = std::string(c.read_string(where + " name"));
    if (t.name.empty()) fail(path_, ": ", where, " has an empty name");
    const std::string what = "tensor '" + t.name + "'";
    const uint32_t n_dims = c.read<uint32_t>(what + " dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      fail(path_, ": ", what, " has ", n_dims, " dimensions (expected 1 to ", kMaxDims, ")");
    std::vector<int64_t> ne(n_dims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = c.read<uint64_t>(what + " dimensions");
      if (n == 0 || n > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(path_, ": ", what, " dimension ", d, " = ", n, " (expected 1 to 2^63-1)");
      ne[d] = int64_t(n);
      if (__builtin_mul_overflow(numel, ne[d], &numel))
        fail(path_, ": ", what, ": the product of its dimensions overflows 64 bits");
    }
    const uint32_t type = c.read<uint32_t>(what + " type");
    const GgmlTypeInfo* info = ggml_type_info(type);
    if (!info)
      fail(path_, ": ", what, " has type ", ggml_type_name(type), " (", type,
           "), which this reader does not dequantize (supported: ", describe_supported(), ")");
    t.type = info->type;
    if (ne[0] % info->block_size != 0)
      fail(path_, ": ", what, " has rows of ", ne[0], " elements, not a multiple of ", info->name, "'s block of ",
           info->block_size);
    uint64_t n_bytes = 0;
    if (__builtin_mul_overflow(uint64_t(numel / info->block_size), uint64_t(info->type_size), &n_bytes))
      fail(path_, ": ", what, ": its byte size overflows 64 bits");
    t.numel = numel;
    t.n_bytes = n_bytes;
    t.shape.assign(ne.rbegin(), ne.rend());
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0)
      fail(path_, ": ", what, " data offset ", t.offset, " is not a multiple of the alignment ", alignment_);
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) fail(path_, ": ", what, " appears twice");
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t pad = (alignment_ - c.pos() % alignment_) % alignment_;
  data_offset_ = c.pos() + pad;
  if (data_offset_ > size_) {
    if (!tensors_.empty())
      fail(path_, ": truncated: the data section should start at offset ", data_offset_, " but the file ends at ",
           size_);
    data_offset_ = size_;
  }
  const uint64_t data_size = size_ - data_offset_;
  for (const auto& t : tensors_) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset)
      fail(path_, ": tensor '", t.name, "' (", ggml_type_info(uint32_t(t.type))->name, ", ", t.n_bytes, " bytes at data offset ", t.offset,
           ") runs past the end of the file (the data section has ", data_size, " bytes)");
  }
  // No two tensors may share bytes: sort by offset and compare neighbours.
  std::vector<const GgufTensorInfo*> order;
  order.reserve(tensors_.size());
  for (const auto& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    if (order[k - 1]->offset + order[k - 1]->n_bytes > order[k]->offset)
      fail(path_, ": tensors '", order[k - 1]->name, "' (bytes ", order[k - 1]->offset, "..",
           order[k - 1]->offset + order[k - 1]->n_bytes, " of the data section) and '", order[k]->name,
           "' (from byte ", order[k]->offset, ") overlap");
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::string GgufFile::get_string(const std::string& key, const std::string& fallback, bool required) const {
  const GgufValue* v = find(key);
  if (!v) {
    if (required) fail(path_, ": missing metadata key '", key, "'");
    return fallback;
  }
  if (v->type != GgufValueType::kString)
    fail(path_, ": metadata key '", key, "' has type ", gguf_type_name(v->type), " (expected string)");
  return v->s;
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback, bool required) const {
  const GgufValue* v = find(key);
  if (!v) {
    if (required) fail(path_, ": missing metadata key '", key, "'");
    return fallback;
  }
  if (!v->is_integer())
    fail(path_, ": metadata key '", key, "' has type ", gguf_type_name(v->type), " (expected an integer)");
  const bool is_unsigned = v->type == GgufValueType::kUint8 || v->type == GgufValueType::kUint16 ||
                           v->type == GgufValueType::kUint32 || v->type == GgufValueType::kUint64;
  if (is_unsigned && v->u > uint64_t(std::numeric_limits<int64_t>::max()))
    fail(path_, ": metadata key '", key, "' = ", v->u, " (too large)");
  return is_unsigned ? int64_t(v->u) : v->i;
}

double GgufFile::get_double(const std::string& key, double fallback, bool required) const {
  const GgufValue* v = find(key);
  if (!v) {
    if (required) fail(path_, ": missing metadata key '", key, "'");
    return fallback;
  }
  if (v->type == GgufValueType::kFloat32) return shortest_double(float(v->f));
  if (v->type == GgufValueType::kFloat64) return v->f;
  if (v->is_integer()) return double(get_int(key, 0));
  fail(path_, ": metadata key '", key, "' has type ", gguf_type_name(v->type), " (expected a number)");
}

void GgufFile::read_into(const GgufTensorInfo& t, torch::Tensor& dst) const {
  if (!dst.is_contiguous() || dst.numel() != t.numel || !dst.device().is_cpu())
    fail(path_, ": tensor '", t.name, "': destination of shape ", dst.sizes(), " cannot take ", t.numel,
         " elements (expected a contiguous CPU tensor of that many)");
  if (dst.scalar_type() == torch::kFloat32)
    dequantize(t.type, tensor_data(t), dst.data_ptr<float>(), t.numel);
  else if (dst.scalar_type() == torch::kBFloat16)
    dequantize(t.type, tensor_data(t), dst.data_ptr<c10::BFloat16>(), t.numel);
  else
    fail(path_, ": tensor '", t.name, "': cannot dequantize into ", dst.scalar_type(),
         " (expected float32 or bfloat16)");
}

void GgufFile::read_rows_into(const GgufTensorInfo& t, const std::vector<int64_t>& rows, torch::Tensor& dst) const {
  const GgmlTypeInfo& info = *ggml_type_info(uint32_t(t.type));
  const int64_t cols = t.row_length(), n_rows = t.numel / cols;
  const uint64_t row_bytes = uint64_t(cols / info.block_size * info.type_size);
  if (!dst.is_contiguous() || dst.numel() != int64_t(rows.size()) * cols || !dst.device().is_cpu() ||
      (dst.scalar_type() != torch::kFloat32 && dst.scalar_type() != torch::kBFloat16))
    fail(path_, ": tensor '", t.name, "': destination of shape ", dst.sizes(), " cannot take ", rows.size(),
         " rows of ", cols, " (expected a contiguous float32 or bfloat16 CPU tensor)");
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r] < 0 || rows[r] >= n_rows) fail(path_, ": tensor '", t.name, "' has no row ", rows[r]);
    const uint8_t* src = tensor_data(t) + uint64_t(rows[r]) * row_bytes;
    if (dst.scalar_type() == torch::kFloat32)
      dequantize(t.type, src, dst.data_ptr<float>() + int64_t(r) * cols, cols);
    else
      dequantize(t.type, src, dst.data_ptr<c10::BFloat16>() + int64_t(r) * cols, cols);
  }
}

torch::Tensor GgufFile::load(const GgufTensorInfo& t, torch::Dtype dtype) const {
  auto out = torch::empty(t.shape, torch::TensorOptions().dtype(dtype));
  read_into(t, out);
  return out;
}

bool is_gguf_path(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (path.size() >= 5) {
    std::string ext = path.substr(path.size() - 5);
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    if (ext == ".gguf") return true;
  }
  char magic[4] = {};
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  const size_t got = std::fread(magic, 1, 4, f);
  std::fclose(f);
  return got == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace reglage::io
