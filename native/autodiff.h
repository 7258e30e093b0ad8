// Forward-mode AD (JVP), the linearized model, and training-step primitives.
#pragma once

#include "model.h"

namespace tangent {

struct JvpResult {
  at::Tensor primal;   // f(x; θ0)
  at::Tensor tangent;  // J_θ f(x; θ0) · v
};

// JVP at state0 (resolved: parameters then buffers) along `tangent` (one entry per parameter,
// an undefined entry meaning zero), by forward-mode AD. No reverse-mode graph is recorded.
JvpResult jvp(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state0,
              const std::vector<at::Tensor>& tangent);

// How JVPs (and so f_lin and its gradients) are computed: Auto uses a model's hand-written
// tangent forward where it has one (the built-in ViT, native/models/vit.cpp) and forward-mode AD
// elsewhere; ForwardAD always uses forward-mode AD. Both give the same values to rounding.
enum class JvpMethod { Auto, ForwardAD };
void set_jvp_method(JvpMethod method);  // process-wide; default Auto
JvpMethod get_jvp_method();

// jvp() by a given method, whatever set_jvp_method chose (tests compare the two).
JvpResult jvp(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state0,
              const std::vector<at::Tensor>& tangent, JvpMethod method);

// The same JVP by double backward: J v = ∂/∂u [ (Jᵀu) · v ]. Slower; used to cross-check.
at::Tensor jvp_double_backward(const Model& m, const at::Tensor& x,
                               const std::vector<at::Tensor>& state0,
                               const std::vector<at::Tensor>& tangent);

// Vector-Jacobian product Jᵀ g at `state`, one gradient per parameter (zeros where unused).
std::vector<at::Tensor> vjp(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state,
                            const at::Tensor& cotangent);

// Plain forward with no autograd bookkeeping.
at::Tensor forward_eval(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state);

// f_lin(x; θ) = f(x; θ0) + J_θ f(x; θ0) · (θ − θ0), with θ0 and θ resolved states.
at::Tensor linearized_forward(const Model& m, const at::Tensor& x,
                              const std::vector<at::Tensor>& state0,
                              const std::vector<at::Tensor>& state);

// A frozen classification head applied to model outputs: logits = W · normalize(out) + b.
struct Head {
  at::Tensor weight;  // [classes, features]; undefined: the model's outputs are the logits
  at::Tensor bias;    // [classes] or undefined
  bool normalize = false;  // L2-normalise features first, as the paper does for CLIP features
};

at::Tensor apply_head(const Head& head, const at::Tensor& out);

enum class Mode { Standard, Linear };

struct StepResult {
  double loss = 0;                 // mean cross-entropy over the batch
  int64_t correct = 0;             // argmax(logits) == label
  std::vector<at::Tensor> grads;   // ∂loss/∂θ, one per parameter
};

// Cross-entropy loss of head(f(x; θ)) (Standard) or head(f_lin(x; θ)) (Linear, backward through
// the JVP at θ0) on integer labels y, and its gradient with respect to θ.
StepResult loss_and_grad(const Model& m, Mode mode, const at::Tensor& x, const at::Tensor& y,
                         const std::vector<at::Tensor>& state,
                         const std::vector<at::Tensor>& state0, const Head& head);

// Loss and correct count without gradients (evaluation).
StepResult evaluate(const Model& m, Mode mode, const at::Tensor& x, const at::Tensor& y,
                    const std::vector<at::Tensor>& state, const std::vector<at::Tensor>& state0,
                    const Head& head);

void check_labels(const at::Tensor& y, int64_t batch, int64_t classes);

// Intra-op threads for libtorch and, where present, OpenBLAS.
void set_num_threads(int n);
int get_num_threads();
// The calling thread opens its OpenMP regions with one thread (its own team never forms): for
// threads that only dispatch work to the compute thread (Node's main thread, the pool threads of
// process-group collectives).
void keep_calling_thread_serial();

}  // namespace tangent
