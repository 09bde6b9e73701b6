// Safetensors reader and writer. The reader treats every file as hostile: the whole header is validated
// (sizes, dtypes, shapes, offsets, overlaps) before a single tensor byte is allocated or read, and every
// allocation is bounded by the size of the file itself.
#include "framework/io/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::io {
namespace {

using Json = nlohmann::ordered_json;  // ordered: the writer keeps the caller's order, the reader the file's

// A header longer than this is not a header we wrote or could sensibly use: refuse before allocating.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;
constexpr const char* kMetadataKey = "__metadata__";
// More dimensions than any model tensor has (LibTorch's own limit is 64): a longer shape is corruption.
constexpr size_t kMaxDims = 16;

struct DtypeInfo {
  const char* name;  // as spelled in the header
  torch::Dtype dtype;
  uint64_t element_size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},    {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& info : kDtypes)
    if (name == info.name) return &info;
  return nullptr;
}

const DtypeInfo* dtype_by_torch(torch::Dtype dtype) {
  for (const auto& info : kDtypes)
    if (dtype == info.dtype) return &info;
  return nullptr;
}

// One validated header entry; begin/end are offsets into the data buffer (after the header).
struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

struct Header {
  uint64_t data_start;   // 8 + header length: where the data buffer begins in the file
  uint64_t buffer_size;  // file size - data_start
  std::vector<Entry> entries;  // in header order
  std::map<std::string, std::string> metadata;
};

// A JSON value in a one-line message, cut short: a corrupt header can hold megabytes in one field.
std::string brief(const Json& v) {
  std::string text = v.dump();
  return text.size() > 200 ? text.substr(0, 200) + "..." : text;
}

// ---- reading the raw header ---------------------------------------------------------------------

uint64_t file_size_of(std::ifstream& in, const std::string& path) {
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (!in || size < 0) fail(path, ": cannot determine file size");
  in.seekg(0, std::ios::beg);
  return static_cast<uint64_t>(size);
}

void read_exact(std::ifstream& in, const std::string& path, uint64_t offset, void* dst, uint64_t n,
                const char* what) {
  if (n == 0) return;
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset), std::ios::beg);
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
  if (!in || static_cast<uint64_t>(in.gcount()) != n)
    fail(path, ": truncated or unreadable while reading ", what, " (", n, " bytes at offset ", offset, ")");
}

// The header length is a little-endian u64; decode byte by byte so the host's order does not matter.
uint64_t decode_u64_le(const unsigned char* bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | bytes[i];
  return v;
}

// Parses the JSON, rejecting duplicate top-level keys (nlohmann would silently keep one of them).
Json parse_header_json(const std::string& path, const std::string& text) {
  std::string duplicate;
  std::set<std::string> seen;
  Json::parser_callback_t on_event = [&](int depth, nlohmann::json::parse_event_t event, Json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  Json json;
  try {
    json = Json::parse(text, on_event);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": header is not valid JSON (", e.what(), ")");
  }
  if (!json.is_object()) fail(path, ": header is not a JSON object (got ", json.type_name(), ")");
  if (!duplicate.empty()) fail(path, ": tensor '", shown(duplicate), "': appears twice in the header");
  return json;
}

// ---- validating entries -------------------------------------------------------------------------

std::map<std::string, std::string> parse_metadata(const std::string& path, const Json& value) {
  if (!value.is_object()) fail(path, ": ", kMetadataKey, " is not an object (got ", value.type_name(), ")");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string())
      fail(path, ": ", kMetadataKey, " key '", shown(key), "' is not a string (got ", v.type_name(), ")");
    metadata[key] = v.get<std::string>();
  }
  return metadata;
}

// Non-negative integer that fits in int64; nlohmann stores non-negative literals as unsigned.
uint64_t as_count(const std::string& path, const std::string& name, const char* field, const Json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(path, ": tensor '", shown(name), "': ", field, " value ", u, " is too large");
    return u;
  }
  if (v.is_number_integer()) fail(path, ": tensor '", shown(name), "': ", field, " value ", brief(v), " is negative");
  fail(path, ": tensor '", shown(name), "': ", field, " holds ", brief(v), " (expected a non-negative integer)");
}

Entry parse_entry(const std::string& path, const std::string& name, const Json& value, uint64_t buffer_size) {
  if (!value.is_object()) fail(path, ": tensor '", shown(name), "': entry is not an object (got ", value.type_name(), ")");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!value.contains(field)) fail(path, ": tensor '", shown(name), "': missing ", field);

  Entry entry{name, nullptr, {}, 0, 0};
  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) fail(path, ": tensor '", shown(name), "': dtype is not a string (got ", brief(dtype), ")");
  entry.dtype = dtype_by_name(dtype.get<std::string>());
  if (!entry.dtype)
    fail(path, ": tensor '", shown(name), "': unknown dtype '", shown(dtype.get<std::string>()),
         "' (expected F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");

  // Byte count = element size * product of dims, checked for overflow at every step.
  const Json& shape = value["shape"];
  if (!shape.is_array()) fail(path, ": tensor '", shown(name), "': shape is not an array (got ", brief(shape), ")");
  if (shape.size() > kMaxDims)
    fail(path, ": tensor '", shown(name), "': shape has ", shape.size(), " dimensions (at most ", kMaxDims, ")");
  uint64_t nbytes = entry.dtype->element_size;
  for (const auto& dim_json : shape) {
    const uint64_t dim = as_count(path, name, "shape", dim_json);
    entry.shape.push_back(static_cast<int64_t>(dim));
    if (dim != 0 && nbytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim)
      fail(path, ": tensor '", shown(name), "': shape ", brief(shape), " overflows the element count");
    nbytes *= dim;
  }

  const Json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    fail(path, ": tensor '", shown(name), "': data_offsets ", brief(offsets), " is not [begin, end]");
  entry.begin = as_count(path, name, "data_offsets", offsets[0]);
  entry.end = as_count(path, name, "data_offsets", offsets[1]);
  if (entry.end < entry.begin)
    fail(path, ": tensor '", shown(name), "': data_offsets [", entry.begin, ", ", entry.end, "] end before begin");
  if (entry.end > buffer_size)
    fail(path, ": tensor '", shown(name), "': data_offsets [", entry.begin, ", ", entry.end,
         "] past the end of the data buffer (", buffer_size, " bytes; file truncated?)");
  if (entry.end - entry.begin != nbytes)
    fail(path, ": tensor '", shown(name), "': data_offsets span ", entry.end - entry.begin, " bytes but dtype ",
         entry.dtype->name, " shape ", brief(shape), " needs ", nbytes);
  return entry;
}

// Two tensors sharing bytes would alias each other's data; zero-sized tensors occupy nothing.
void check_no_overlap(const std::string& path, std::vector<Entry> entries) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Entry* previous = nullptr;
  for (const auto& entry : entries) {
    if (entry.begin == entry.end) continue;
    if (previous && entry.begin < previous->end)
      fail(path, ": tensor '", shown(entry.name), "': data_offsets [", entry.begin, ", ", entry.end,
           "] overlap tensor '", shown(previous->name), "' [", previous->begin, ", ", previous->end, "]");
    previous = &entry;
  }
}

// Opens the file, bounds and parses the header, validates every entry. Reads no tensor data.
Header read_header(std::ifstream& in, const std::string& path) {
  if (core::is_directory(path)) fail(path, ": is a directory, expected a safetensors file");
  in.open(path, std::ios::binary);
  if (!in) fail(path, ": cannot open safetensors file (", std::strerror(errno), ")");
  const uint64_t file_size = file_size_of(in, path);
  if (file_size < 8) fail(path, ": file is ", file_size, " bytes, too short for the 8-byte header length");

  unsigned char length_bytes[8];
  read_exact(in, path, 0, length_bytes, 8, "the header length");
  const uint64_t header_len = decode_u64_le(length_bytes);
  if (header_len > kMaxHeaderBytes)
    fail(path, ": header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
  if (header_len > file_size - 8)
    fail(path, ": header length ", header_len, " is larger than the rest of the file (", file_size - 8, " bytes)");

  std::string text(header_len, '\0');
  read_exact(in, path, 8, text.data(), header_len, "the header");
  const Json json = parse_header_json(path, text);

  Header header;
  header.data_start = 8 + header_len;
  header.buffer_size = file_size - header.data_start;
  for (const auto& [name, value] : json.items()) {
    if (name == kMetadataKey)
      header.metadata = parse_metadata(path, value);
    else
      header.entries.push_back(parse_entry(path, name, value, header.buffer_size));
  }
  check_no_overlap(path, header.entries);
  return header;
}

// A bool byte other than 0 or 1 is undefined behaviour for torch's kernels: reject it.
void check_bool_bytes(const std::string& path, const Entry& entry, const torch::Tensor& t) {
  const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
  for (int64_t i = 0; i < t.numel(); ++i)
    if (bytes[i] > 1)
      fail(path, ": tensor '", shown(entry.name), "': BOOL element ", i, " has byte value ", int(bytes[i]),
           " (expected 0 or 1)");
}

// ---- writing ------------------------------------------------------------------------------------

// Header JSON padded with spaces to a multiple of 8 so the data buffer starts aligned (as Python does).
std::string padded_header(const Json& header) {
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::string encode_u64_le(uint64_t v) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return bytes;
}

}  // namespace

// A name from the file as it may appear in a one-line message: control bytes (a "\n" in a JSON key) are
// shown as \xNN, and a very long name is cut.
std::string shown(const std::string& name) {
  std::string out;
  for (unsigned char c : name) {
    if (out.size() >= 200) return out + "...";
    if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    } else {
      out += char(c);
    }
  }
  return out;
}

namespace {

// Reads each tensor of a validated header in turn and hands it to `fn`.
void read_entries(std::ifstream& in, const std::string& path, const Header& header,
                  const std::function<void(const std::string&, torch::Tensor&)>& fn) {
  for (const auto& entry : header.entries) {
    // Safe to allocate: the byte count was checked to equal end - begin, which lies inside the file.
    auto t = torch::empty(entry.shape, torch::TensorOptions().dtype(entry.dtype->dtype));
    read_exact(in, path, header.data_start + entry.begin, t.data_ptr(), entry.end - entry.begin,
               ("tensor '" + entry.name + "'").c_str());
    if (entry.dtype->dtype == torch::kBool) check_bool_bytes(path, entry, t);
    fn(entry.name, t);
  }
}

}  // namespace

std::map<std::string, torch::Tensor> read_safetensors(const std::string& path,
                                                      std::map<std::string, std::string>* metadata) {
  std::ifstream in;
  Header header = read_header(in, path);
  std::map<std::string, torch::Tensor> tensors;
  read_entries(in, path, header, [&](const std::string& name, torch::Tensor& t) { tensors.emplace(name, t); });
  if (metadata) *metadata = std::move(header.metadata);
  return tensors;
}

void for_each_safetensor(const std::string& path,
                         const std::function<void(const std::string&, torch::Tensor&)>& fn) {
  std::ifstream in;
  const Header header = read_header(in, path);
  read_entries(in, path, header, fn);
}

std::vector<SafetensorsEntry> read_safetensors_header(const std::string& path) {
  std::ifstream in;
  const Header header = read_header(in, path);
  std::vector<SafetensorsEntry> entries;
  for (const auto& entry : header.entries) entries.push_back({entry.name, entry.dtype->dtype, entry.shape});
  return entries;
}

std::string encode_safetensors(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata, const std::string& path) {
  // Validate names and dtypes, and bring every tensor to contiguous CPU memory, before building anything.
  std::set<std::string> names;
  std::vector<torch::Tensor> cpu;
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey) fail(path, ": tensor '", shown(name), "': name is reserved for metadata");
    if (!names.insert(name).second) fail(path, ": tensor '", shown(name), "': name given twice");
    if (!tensor.defined()) fail(path, ": tensor '", shown(name), "': undefined tensor");
    if (!dtype_by_torch(tensor.scalar_type()))
      fail(path, ": tensor '", shown(name), "': unsupported dtype ", tensor.scalar_type(),
           " (expected F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    cpu.push_back(tensor.detach().to(torch::kCPU).contiguous());
  }

  Json header = Json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t nbytes = cpu[i].numel() * cpu[i].element_size();
    header[tensors[i].first] = {{"dtype", dtype_by_torch(cpu[i].scalar_type())->name},
                                {"shape", cpu[i].sizes().vec()},
                                {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }

  const std::string header_text = padded_header(header);
  std::string bytes = encode_u64_le(header_text.size()) + header_text;
  bytes.reserve(bytes.size() + offset);
  for (const auto& t : cpu) bytes.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return bytes;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // One buffer, one atomic write: readers never see a half-written file.
  core::write_file_atomic(path, encode_safetensors(tensors, metadata, path));
}

}  // namespace reglage::io
