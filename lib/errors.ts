/**
 * Typed errors. Every error tangent-edit raises is a `TangentError` with a stable `code`; the
 * native layer raises the same classes (registered with it at load), so `instanceof` works for
 * errors from C++ too.
 */
export class TangentError extends Error {
  readonly code: string = 'ERR_TANGENT';
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A bad argument or option (names the option and the value). */
export class ArgumentError extends TangentError {
  override readonly code = 'ERR_TANGENT_ARGUMENT';
}
/** A tensor, input or parameter of the wrong shape (names both shapes). */
export class ShapeError extends TangentError {
  override readonly code = 'ERR_TANGENT_SHAPE';
}
/** A tensor of the wrong dtype, or an unknown dtype. */
export class DTypeError extends TangentError {
  override readonly code = 'ERR_TANGENT_DTYPE';
}
/** An unknown or unavailable device, or tensors on different devices. */
export class DeviceError extends TangentError {
  override readonly code = 'ERR_TANGENT_DEVICE';
}
/** A missing, extra or duplicated parameter name. */
export class ParameterError extends TangentError {
  override readonly code = 'ERR_TANGENT_PARAMETER';
}
/** Use of a tensor or model after dispose(). */
export class DisposedError extends TangentError {
  override readonly code = 'ERR_TANGENT_DISPOSED';
}
/** An error raised inside libtorch (message without the C++ backtrace). */
export class TorchError extends TangentError {
  override readonly code = 'ERR_TANGENT_TORCH';
}
/** An object used in a state that does not allow it. */
export class StateError extends TangentError {
  override readonly code = 'ERR_TANGENT_STATE';
}
/**
 * A model that uses a feature tangent-edit cannot run with a functional forward (names the op,
 * attribute or type, and what to do instead).
 */
export class UnsupportedError extends TangentError {
  override readonly code = 'ERR_TANGENT_UNSUPPORTED';
}
/**
 * A file whose loading would run code it carries (a TorchScript archive) given without the
 * caller's consent (`Model.load(file, { trustCode: true })`, the CLI's `--trust-code`). Not an
 * ArgumentError: the arguments are valid; the caller has to decide to trust the file (or use a
 * format that carries no code, a torch.export `.pt2`).
 */
export class UntrustedCodeError extends TangentError {
  override readonly code = 'ERR_TANGENT_UNTRUSTED_CODE';
}
// CheckpointError (unreadable, malformed or mismatched checkpoints) lives in
// lib/checkpoint/errors.ts and is a TangentError too.
/** The native addon could not be loaded (says what to install). */
export class NativeLoadError extends TangentError {
  override readonly code = 'ERR_TANGENT_NATIVE_LOAD';
}

