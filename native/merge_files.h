// Merging checkpoint files tensor by tensor, file to file (no JS buffers): task arithmetic reads
// the inputs through read-only memory maps of the open files (no copy of the input bytes) and
// streams each tensor in cache-sized chunks through the fused kernel (bit-identical to ops.h's
// combine), checks for NaN/Inf per chunk and writes with positioned writes at the tensor's offset
// in the output. A file that shrinks under the mapping raises SIGBUS inside a guard: an IO error
// naming the file and byte, never a crash. Where a file cannot be mapped the chunks are read with
// positioned reads. The other methods stream too (merge/stream.h: every method but nuslerp by
// columns) over the same chunks, under the same guard, in a few passes; mapped pages a tensor
// has read are dropped from the resident set (chunk by chunk for a tensor whose inputs span over
// 256 MiB), so memory stays within a fixed budget whatever the model's size. nuslerp by columns
// reads whole tensors with positioned reads and runs merge.h's merge_tensor.
#pragma once

#include <string>
#include <vector>

#include "merge.h"

namespace tangent {

struct FileSpan {
  int file = 0;          // index into the `files` list of merge_file_tensors
  uint64_t offset = 0;   // absolute byte offset of the tensor's data in that file
};

struct FileMergeItem {
  std::string name;
  at::ScalarType dtype = at::kFloat;  // of every input
  at::ScalarType out = at::kFloat;    // of the output (the input dtype for integer tensors)
  std::vector<int64_t> shape;
  std::vector<FileSpan> inputs;       // the base first (when `base`), then one per model
  // Per input, where float inputs differ in dtype (empty: every input is `dtype`); each is read in
  // its own and converted to the compute dtype, as mergekit casts its inputs.
  std::vector<at::ScalarType> input_dtypes;
  at::ScalarType dtype_of(size_t k) const { return input_dtypes.empty() ? dtype : input_dtypes[k]; }
  bool base = true;                   // whether inputs[0] is the base
  size_t spec = 0;                    // index into the `specs` of merge_file_tensors
  uint64_t out_offset = 0;            // absolute byte offset in the output file
};

struct OpenFile {
  int fd = -1;
  std::string path;  // for messages
};

// Merges `items` from `files` into `out` (all already open; nothing is opened, closed or synced
// here). Returns the names of the merged float tensors that hold NaN or Inf when `check_finite`
// (the tensors are written all the same; the caller decides). Each item is merged by its spec
// (mergekit's parameters can differ per tensor: lists over layers, filters by name).
// Test seams: mapping on/off (off: positioned reads, the fallback path), and a hook run after the
// inputs are mapped and checked, before any tensor is read (a test truncates a file there).
extern bool merge_files_use_mmap;
extern void (*merge_files_after_map_hook)();

// With a CUDA `device` every float tensor is read whole, merged there by the methods' whole-tensor
// forms and written back (host memory: the inputs of the largest tensor; no streaming).
std::vector<std::string> merge_file_tensors(const std::vector<OpenFile>& files, const OpenFile& out,
                                            const std::vector<FileMergeItem>& items,
                                            const std::vector<MergeSpec>& specs, bool check_finite,
                                            const at::Device& device = at::Device(at::kCPU));

}  // namespace tangent
