// Merging checkpoint files tensor by tensor, file to file: every input tensor is read with
// positioned reads from an open file (no JS buffers, no memory map: a file truncated under us is
// an error naming it, never a SIGBUS), merged, checked for NaN/Inf, and written with positioned
// writes at its offset in the output. Task arithmetic streams each tensor in cache-sized chunks
// through the fused kernel (bit-identical to ops.h's combine); the other methods read whole
// tensors and run merge.h's merge_tensor.
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
  std::vector<FileSpan> inputs;       // the base first, then one per model
  uint64_t out_offset = 0;            // absolute byte offset in the output file
};

struct OpenFile {
  int fd = -1;
  std::string path;  // for messages
};

// Merges `items` from `files` into `out` (all already open; nothing is opened, closed or synced
// here). Returns the names of the merged float tensors that hold NaN or Inf when `check_finite`
// (the tensors are written all the same; the caller decides). weights: one per model.
std::vector<std::string> merge_file_tensors(const std::vector<OpenFile>& files, const OpenFile& out,
                                            const std::vector<FileMergeItem>& items,
                                            const std::vector<double>& weights, const MergeSpec& spec,
                                            bool check_finite);

}  // namespace tangent
